"""WESAD (paper section 4): chest Resp + chest ECG + wrist BVP, 1D-CNN encoders.

Needs the raw WESAD files (``--config.dataset.manual_dir=DIR``; see
``python -m ovaib_jax.data.build wesad --help``). Paper setup: Adam, batch 64, tau 0.01,
dims 256, beta = 0.5. Config argument: ``objective=NAME`` (default ova_ib).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import paper_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "default", f"objective={arg.objective}")
    config.dataset.name = "wesad"
    config.dataset.builder_config = ""  # the only config
    config.dataset.config = ml_collections.ConfigDict()  # no builder field overridden
    config.dataset.eval_split = "test"
    config.model.encoders = ""  # resp, ecg, bvp: cnn1d (the dataset's suggestion)
    paper_setup(config, learning_rate=1e-3, beta=0.5)  # lr not given for WESAD: 1e-3
    config.num_train_steps = 20_000  # about 100 epochs of the training windows
    config.log_every_steps = 100
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 2_000
    return config
