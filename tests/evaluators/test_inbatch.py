"""The in-batch evaluators: heldout_loss."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ovaib_jax import evaluators, losses
from ovaib_jax.evaluators import Embedded, RunInfo


def test_heldout_loss_draws_fresh_random_negatives_for_each_batch():
    """An objective with random negatives gets key ``fold_in(key(seed + 1), i)`` for eval
    batch i (as mi_bounds does): two identical batches get different negatives, and the
    result is the mean of the objective on each with its own key. (Every batch had the
    same key, so the same shuffle.)"""
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(3, 16, 8)).astype(np.float32)
    z = np.concatenate([batch, batch], axis=1)  # two identical batches of 16
    kwargs = {"tau": 0.1, "negatives": "shuffled"}
    info = RunInfo(objective="ova_sufficiency", seed=5, loss_kwargs=kwargs, batch_size=16)
    got = evaluators.get("heldout_loss")().run(None, Embedded(z, {}, {}, ["a", "b", "c"]), info)
    base = jax.random.key(6)
    each = [
        float(losses.ova_sufficiency(batch, key=jax.random.fold_in(base, i), **kwargs)[0])
        for i in range(2)
    ]
    assert abs(each[0] - each[1]) > 1e-3  # the keys differ where it matters
    assert got["loss"] == pytest.approx(np.mean(each), rel=1e-5)
