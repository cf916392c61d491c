"""The default parity run with a CLIP-style learnable temperature (log tau in the model,
initialised from objective.tau; logit_scale = 1 / tau for Symile)."""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "default", arg)
    config.model.learnable_temperature = True
    config.model.min_temperature = 0.01  # CLIP's clip of the logit scale at 100
    return config
