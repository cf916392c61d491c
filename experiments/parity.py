"""The parity (XOR) benchmark of SPEC section 8, sized for objective comparisons.

    python -m ovaib_jax.sweep --config=experiments/parity.py:M=3,k=2 \
        --objectives=ova_ib,symile,pairwise_clip,gram --seeds=42,0,1 --workdir=DIR

M - 1 modalities are uniform random k-bit vectors and the last is their parity (with
probability p, else a copy of the first): every pair of modalities is independent
when p = 1, so only objectives that model the joint dependence can align them. One to
three minutes per objective and seed on a 2-core CPU (3000 steps at batch 256, the
setting of SPEC section 8: about a minute; then the final probes); nothing is
downloaded.

Config arguments (``--config=experiments/parity.py:M=4,k=1,p=0.5``):

* ``M`` (3, 4 or 5): modalities; ``k``: bits per modality (the label has 2**k classes);
  ``p``: probability that the last modality is the parity;
* ``objective=NAME``: as in ``experiments/default.py`` (OVA-IB at tau 0.1, beta 0);
* ``runlocal``: a few seconds' smoke run.

Final evaluation (once, after the last step): ``downstream`` (an MLP probe of the label,
i.e. the last modality's bits, from all representations), ``modality_subsets`` (the same
probe on every subset: from the first M - 1 modalities the label is decodable only
through their parity, and a linear probe cannot decode a parity of separately encoded
inputs), ``retrieval`` of the parity modality from all the others with label relevance
(a candidate is relevant when it has the query's bit pattern; by sample index, whole
groups of equal patterns tie) and ``mi_bounds``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import OFFLINE_PROBE, evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The parity config; ``arg`` as in the module docstring."""
    arg = parse_arg(arg, objective="ova_ib", M=3, k=2, p=1.0, runlocal=False)
    if arg.M not in (3, 4, 5):
        raise ValueError(f"parity: M must be 3, 4 or 5, got {arg.M}.")
    base = f"objective={arg.objective}" + (",runlocal" if arg.runlocal else "")
    config = sibling_config(__file__, "default", base)
    config.dataset.builder_config = f"m{arg.M}"
    config.dataset.config.M = arg.M
    config.dataset.config.k = arg.k
    config.dataset.config.p = arg.p
    # Bit patterns repeat (2**k of them), so retrieving the parity modality by sample index
    # only ties whole groups: retrieve it from the others with label relevance (the label
    # is the last modality's pattern), i.e. "top candidate has the right pattern".
    names = [f"x{i}" for i in range(arg.M)]
    retrieval = {
        "pairs": ("+".join(names[:-1]) + "->" + names[-1],),
        "relevance": "label",
        "label_target": "label",
    }
    evaluation_setup(
        config,
        probe={**OFFLINE_PROBE, "max_epochs": 3 if arg.runlocal else 30},
        retrieval=retrieval,
    )
    if not arg.runlocal:
        config.batch_size = 256
        config.num_train_steps = 3_000
        config.eval_every_steps = 1_000
        config.checkpoint_every_steps = 1_000
    return config
