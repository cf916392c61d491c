"""Vision&Touch (paper section 4): RGB + force (+ depth / pose / optical flow).

Config argument ``variant=vfd|vfp|vfpd|vfpdo`` (the dataset's builder configs) and
``objective=NAME``. Encoders from the dataset spec: ResNet-18 for images (depth keeps
its stored channels; set ``--config.model.resnet18.input_channels=3`` to tile them),
1D-CNN for force, LeakyReLU MLP for proprioception. Learning rate 1e-4 (paper, VFD
classification / VFPD / VFPDO; 1e-3 for VFD regression). Needs the raw files
(``--config.dataset.manual_dir``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import paper_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, objective="ova_ib", variant="vfd")
    config = sibling_config(__file__, "default", f"objective={arg.objective}")
    config.dataset.name = "vision_touch"
    config.dataset.builder_config = arg.variant
    config.dataset.config = ml_collections.ConfigDict()
    paper_setup(config, learning_rate=1e-4)
    config.num_train_steps = 30_000
    config.log_every_steps = 100
    config.eval_every_steps = 3_000
    config.checkpoint_every_steps = 3_000
    return config
