"""The baselines' defaults are stable at every M (issue 13: Symile at M = 5 diverged with
unnormalised embeddings at logit_scale = 1, gradient norms of 10^3 in three steps)."""

from __future__ import annotations

import math

import pytest

from ovaib_jax import runtime, train
from tests.train_helpers import synthetic_batch, tiny_config


@pytest.mark.parametrize("M", [3, 5])
def test_symile_defaults_are_stable_at_every_m(M):
    config = tiny_config(name="parity", arg=f"objective=symile,M={M},runlocal")
    assert config.model.normalize_embeddings and config.model.learnable_temperature
    run = train.build(config, with_data=False)
    state = run.state
    for s in range(3):  # inputs 10x the data's scale: unnormalised products explode
        batch = {k: 10 * v for k, v in synthetic_batch(run.resolved.modalities, 16, s).items()}
        state, metrics = run.train_step(state, runtime.global_batch(batch, run.mesh))
        # With the old defaults: grad_norm 400-9500 and loss 29-150 here.
        assert float(metrics["grad_norm"]) < 50
        assert float(metrics["loss"]) < 2 * math.log(16)
