"""``ovaib_trifeature``: redundancy, uniqueness and synergy together, M image views, offline.

    python -m ovaib_jax.sweep --config=experiments/trifeature.py:M=3 \
        --objectives=ova_ib,symile,pairwise_clip,gram --seeds=42,0,1 --workdir=DIR

Trifeature-like 32 x 32 RGB images generated with numpy (nothing is downloaded): one
shape shared by every view (redundancy), a texture per view (uniqueness), colour bits
whose XOR over the M views is 0 (a dependence of order M only) and a task label
``(texture_0 + color_1) mod 10`` that no single view predicts (task synergy); see
``ovaib_jax.data.trifeature``. Small CNNs (16 and 32 channels) on every view, 1500 steps
at batch 128 (38 epochs of the 5000 training examples): about ten minutes per objective
and seed on a busy 2-core CPU at M = 3 (2.4 steps/s measured), plus the final probes.

Config arguments: ``M`` (3, 4 or 5), ``beta`` (the minimality weight of OVA-IB and of
``ova_ib_comm``, OVA-IB plus CoMM's self-contrast, and of ``ova_ib_heads``; default 1,
the paper's: the benchmark shows what minimality costs in unique information),
``objective=NAME``, ``runlocal``. Temperatures 0.1.

Final evaluation: ``downstream`` probes of every factor from all views (``shape``,
``texture_{m}``, ``color_{m}``, ``synergy_label``, ``task_label``) and, per view from
its own representation, ``downstream/texture_onehot/{view}/r2`` (how much of its unique
texture it keeps) and ``downstream/nuisance/{view}/r2`` (shift, scale, texture phase,
colour jitter); ``modality_subsets`` of ``shape`` (R), ``texture_0`` (U),
``synergy_label`` (higher-order S) and ``task_label`` (task S) on every subset of views;
``retrieval`` of each view from the others, a candidate being relevant when it has the
query's shape; ``mi_bounds``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import OFFLINE_PROBE, evaluation_setup, parse_arg, sibling_config

# The R / U / S columns of the modality_subsets table.
SUBSET_TARGETS = ("shape", "texture_0", "synergy_label", "task_label")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The trifeature config; ``arg`` as in the module docstring."""
    arg = parse_arg(arg, objective="ova_ib", M=3, beta=1.0, runlocal=False)
    if arg.M not in (3, 4, 5):
        raise ValueError(f"trifeature: M must be 3, 4 or 5, got {arg.M}.")
    base = f"objective={arg.objective}" + (",runlocal" if arg.runlocal else "")
    config = sibling_config(__file__, "default", base)
    config.dataset.name = "ovaib_trifeature"
    config.dataset.builder_config = f"m{arg.M}"
    config.dataset.config = ml_collections.ConfigDict(
        {
            "M": arg.M,
            "num_train": 512 if arg.runlocal else 5_000,
            "num_test": 256 if arg.runlocal else 1_000,
        }
    )
    if "tau" in config.objective:
        config.objective.tau = 0.1
    if arg.objective.startswith("ova_ib"):  # ova_ib, ova_ib_comm, ova_ib_heads
        config.objective.beta = arg.beta
    config.model.encoders = ""  # small_cnn for every view (the dataset's suggestion)
    config.model.small_cnn.features = (16, 32)
    evaluation_setup(
        config,
        probe={**OFFLINE_PROBE, "max_epochs": 3 if arg.runlocal else 30},
        downstream={"per_modality_targets": ("texture_onehot", "nuisance")},
        retrieval={"relevance": "label", "label_target": "shape"},
    )
    config.evaluator_kwargs.modality_subsets.targets = SUBSET_TARGETS
    if not arg.runlocal:
        config.batch_size = 128
        config.num_train_steps = 1_500
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
    return config
