"""Vision&Touch VFD classification (paper Table 1): RGB + force + depth -> contact.

    python -m ovaib_jax.sweep --config=experiments/paper/vfd_classification.py \
        --objectives=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib \
        --seeds=42,0,1 --workdir=DIR --config.dataset.manual_dir=$HOME/data/vision_touch

Paper setup (SPEC section 5): Adam at learning rate 1e-4, batch 64, tau 0.01, dims 256,
3-layer heads, lam 1e-8, beta 1; ResNet-18 for RGB and depth (depth duplicated to 3
channels), 1D-CNN for force. Final evaluation: the 4-layer MLP probe of ``contact`` on
the frozen representations, every modality subset, retrieval of each modality from the
others, MI bounds. Config argument ``objective=NAME``. Needs the raw files
(``--config.dataset.manual_dir``; see ``python -m ovaib_jax.data.build vision_touch``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """VFD classification; ``arg``: ``objective=NAME``."""
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "../vision_touch", f"objective={arg.objective},variant=vfd")
    config.model.resnet18.input_channels = 3  # depth (1 channel) tiled to 3, as in the paper
    evaluation_setup(config, targets=("contact",))
    return config
