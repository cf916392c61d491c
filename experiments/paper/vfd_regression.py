"""Vision&Touch VFD regression (paper Table 1, MSE): RGB + force + depth -> the next
end-effector position and yaw (``ee_yaw_next``, 4-d).

    python -m ovaib_jax.sweep --config=experiments/paper/vfd_regression.py \
        --objectives=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib \
        --seeds=42,0,1 --workdir=DIR --config.dataset.manual_dir=$HOME/data/vision_touch

As ``vfd_classification.py`` but with learning rate 1e-3 (the paper's for VFD
regression) and the MLP probe regressing ``ee_yaw_next`` (test MSE).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """VFD regression; ``arg``: ``objective=NAME``."""
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "../vision_touch", f"objective={arg.objective},variant=vfd")
    config.optimizer.learning_rate = 1e-3
    config.model.resnet18.input_channels = 3  # depth (1 channel) tiled to 3, as in the paper
    evaluation_setup(config, targets=("ee_yaw_next",))
    return config
