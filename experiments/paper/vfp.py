"""Vision&Touch VFP (paper Table 1): RGB + force + proprioception -> contact.

    python -m ovaib_jax.sweep --config=experiments/paper/vfp.py \
        --objectives=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib \
        --seeds=42,0,1 --workdir=DIR --config.dataset.manual_dir=$HOME/data/vision_touch

Paper setup (SPEC section 5): Adam at learning rate 1e-4 (the paper gives none for VFP:
that of the other Vision&Touch classification tasks), batch 64, tau 0.01, dims 256,
3-layer heads, lam 1e-8, beta 1. Encoders: ResNet-18 for RGB, 1D-CNN for force, a
LeakyReLU MLP for proprioception. Final evaluation: the 4-layer MLP probe of
``contact``, every modality subset, retrieval of each modality from the others, MI
bounds. Config argument ``objective=NAME``. Needs the raw files
(``--config.dataset.manual_dir``; see ``python -m ovaib_jax.data.build vision_touch``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """VFP; ``arg``: ``objective=NAME``."""
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "../vision_touch", f"objective={arg.objective},variant=vfp")
    config.optimizer.learning_rate = 1e-4
    evaluation_setup(config, targets=("contact",))
    return config
