"""CMU-MOSEI (MultiBench features): vision + audio + text sequences, LSTM encoders.

Paper setup with learning rate 1e-5. Config argument ``objective=NAME``. Needs the
MultiBench feature files (``--config.dataset.manual_dir``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import paper_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "default", f"objective={arg.objective}")
    config.dataset.name = "mosei"
    config.dataset.builder_config = "senti"  # binary sentiment labels
    config.dataset.config = ml_collections.ConfigDict()
    config.dataset.eval_split = "valid"
    paper_setup(config, learning_rate=1e-5)
    config.num_train_steps = 50_000
    config.log_every_steps = 100
    config.eval_every_steps = 5_000
    config.checkpoint_every_steps = 5_000
    return config
