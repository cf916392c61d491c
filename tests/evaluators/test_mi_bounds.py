"""MI bounds: aligned embeddings reach log N, independent ones do not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ovaib_jax import evaluators
from ovaib_jax.evaluators import Embedded, RunInfo

NAMES = ("a", "b", "c")


def _emb(z):
    return Embedded(np.asarray(z, np.float32), {}, {}, NAMES)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("objective", ["ova_ib", "pairwise_clip", "symile"])
def test_aligned_embeddings_approach_log_n(objective):
    n, b = 300, 64
    u = _unit(np.random.default_rng(0).normal(size=(n, 64)))
    z = np.stack([u, u, u])
    kwargs = {}
    if objective == "symile":
        # Aligned for the MIP over independently permuted negatives: distinct one-hot
        # vectors, MIP(e_i, e_j, e_k) = 1 if i = j = k else 0.
        e = np.eye(n)
        z, kwargs = np.stack([e, e, e]), {"logit_scale": 100.0}
    r = evaluators.get("mi_bounds")(batch_size=b, loss_kwargs=kwargs).run(
        None, _emb(z), RunInfo(objective=objective)
    )
    assert r["log_n"] == pytest.approx(math.log(b))
    assert r["num_batches"] == n // b and r["batch_size"] == b
    own = [k for k in r if k.startswith("mi_bound/") and k != "mi_bound/mean"]
    assert own, r
    for k in own:
        assert r["log_n"] - 0.05 < r[k] <= r["log_n"] + 1e-4, (k, r[k])
    # The OVA yardstick is reported whatever the objective, per modality name.
    for m in NAMES:
        assert r[f"ova_mi_bound/{m}"] == pytest.approx(math.log(b), abs=0.05)


def test_independent_embeddings_stay_far_below_log_n():
    z = np.random.default_rng(1).normal(size=(3, 256, 64))
    r = evaluators.get("mi_bounds")(batch_size=64).run(None, _emb(z), RunInfo(objective="ova_ib"))
    assert r["num_batches"] == 4
    assert r["mi_bound/mean"] < r["log_n"] - 1.0
    assert r["ova_mi_bound/mean"] == pytest.approx(r["mi_bound/mean"], abs=1e-5)  # same tau
    assert set(r) >= {"loss", "mi_bound/m0", "mi_bound/m1", "mi_bound/m2", "ova_mi_bound/c"}


def test_batch_size_is_capped_and_errors():
    z = np.random.default_rng(2).normal(size=(3, 10, 8))
    r = evaluators.get("mi_bounds")(batch_size=256).run(
        None, _emb(z), RunInfo(objective="pairwise_clip")
    )
    assert r["batch_size"] == 10 and r["num_batches"] == 1
    with pytest.raises(ValueError, match="needs objective"):
        evaluators.get("mi_bounds")().run(None, _emb(z), RunInfo())
    with pytest.raises(ValueError, match="Unknown objective 'clip'"):
        evaluators.get("mi_bounds")().run(None, _emb(z), RunInfo(objective="clip"))
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        evaluators.get("mi_bounds")(max_batches=0)
