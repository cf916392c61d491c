"""MuJoCo Push (paper Table 1, MSE): 32-frame grayscale history + force + pose -> the next
2-d object position.

    python -m ovaib_jax.sweep --config=experiments/paper/mujoco_push.py \
        --objectives=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib \
        --seeds=42,0,1 --workdir=DIR --config.dataset.manual_dir=$HOME/data/mujoco_push

Paper setup (SPEC section 5): Adam at learning rate 1e-3, batch 64, tau 0.01, dims 256,
3-layer heads, lam 1e-8, beta 1. Encoders: ResNet-18 on the frame stack as 32 input
channels, 1D-CNN for force, a LeakyReLU MLP for pose (``experiments/mujoco_push.py``).
Final evaluation: the 4-layer MLP probe regressing ``position`` (test MSE), every
modality subset, retrieval of each modality from the others, MI bounds. Config argument
``objective=NAME``. Needs the raw files (``--config.dataset.manual_dir``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """MuJoCo Push; ``arg``: ``objective=NAME``."""
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "../mujoco_push", f"objective={arg.objective}")
    evaluation_setup(config, targets=("position",))
    return config
