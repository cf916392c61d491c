"""MuJoCo Push: 32-frame grayscale stack (ResNet-18, 32 channels) + force (1D-CNN) + pose
(LeakyReLU MLP). Paper setup with learning rate 1e-3. Config argument ``objective=NAME``.
Needs the raw files (``--config.dataset.manual_dir``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import paper_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "default", f"objective={arg.objective}")
    config.dataset.name = "mujoco_push"
    config.dataset.builder_config = ""
    config.dataset.config = ml_collections.ConfigDict()
    config.dataset.eval_split = "valid"
    paper_setup(config, learning_rate=1e-3)
    config.num_train_steps = 30_000
    config.log_every_steps = 100
    config.eval_every_steps = 3_000
    config.checkpoint_every_steps = 3_000
    return config
