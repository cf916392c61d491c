"""Ablation (paper Table 4): OVA-IB with a learnable MLP projector t_m(z_-m) instead of
the parameter-free projection onto span(z_-m), on the default parity benchmark."""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = sibling_config(__file__, "default", arg)
    if config.objective.name not in ("ova_ib", "ova_sufficiency"):
        raise ValueError("The MLP projector ablation applies to ova_ib / ova_sufficiency only.")
    config.objective.projector = "mlp"  # one MLP per held-out modality, in the model
    config.model.projector_hidden = (128,)
    return config
