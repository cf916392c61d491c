"""The latent-factor benchmark (``ovaib_latent``): what each objective keeps and drops.

    python -m ovaib_jax.sweep --config=experiments/latent.py:M=3,beta=1 \
        --objectives=ova_ib,pairwise_clip,symile --seeds=42,0,1 --workdir=DIR

Every modality is a fixed random MLP of a factor shared by all modalities, pairwise
factors (a chain), a share of a synergistic angle (visible only jointly) and a private
nuisance. One to three minutes per objective and seed on a 2-core CPU (3000 steps at
batch 256, then the final probes); nothing is downloaded.

Config arguments: ``M`` (3, 4 or 5), ``beta`` (OVA-IB's minimality weight; default 1,
the paper's), ``objective=NAME``, ``runlocal``. Every objective with a temperature
uses tau = 0.1 (as on uci_mfeat).

Final evaluation: ``downstream`` probes of ``label`` (signs of the shared factor),
``target`` (a regression of the shared factor) and ``synergy_label`` (higher-order
only), and the *nuisance decoding*: for each modality a regression probe from its own
representation to its private ``nuisance``, ``downstream/nuisance/{modality}/r2``
(0: none of it kept, a minimal representation; 1: all of it) and its mean over
modalities; ``modality_subsets``; ``retrieval``; ``mi_bounds``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import OFFLINE_PROBE, evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The latent-factor config; ``arg`` as in the module docstring."""
    arg = parse_arg(arg, objective="ova_ib", M=3, beta=1.0, runlocal=False)
    if arg.M not in (3, 4, 5):
        raise ValueError(f"latent: M must be 3, 4 or 5, got {arg.M}.")
    base = f"objective={arg.objective}" + (",runlocal" if arg.runlocal else "")
    config = sibling_config(__file__, "default", base)
    config.dataset.name = "ovaib_latent"
    config.dataset.builder_config = f"m{arg.M}"
    config.dataset.config = ml_collections.ConfigDict(
        {
            "M": arg.M,
            "num_train": 1024 if arg.runlocal else 20_000,
            "num_test": 256 if arg.runlocal else 4_096,
        }
    )
    if "tau" in config.objective:
        config.objective.tau = 0.1
    if arg.objective.startswith("ova_ib"):  # ova_ib, ova_ib_comm, ova_ib_heads
        config.objective.beta = arg.beta
    evaluation_setup(
        config,
        probe={**OFFLINE_PROBE, "max_epochs": 3 if arg.runlocal else 30},
        downstream={"per_modality_targets": ("nuisance",)},
    )
    if not arg.runlocal:
        config.batch_size = 256
        config.num_train_steps = 3_000
        config.eval_every_steps = 1_000
        config.checkpoint_every_steps = 1_000
    return config
