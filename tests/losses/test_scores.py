"""Retrieval scorers (SPEC section 4) against literal per-pair NumPy versions."""

import jax
import numpy as np
import pytest

from ovaib_jax import losses
from tests.losses import reference as ref


def _unit(x):
    return x / np.linalg.norm(x)


def _literal(name, queries, cands):
    q_count, nq, _ = queries.shape
    out = np.zeros((nq, cands.shape[0]))
    for i in range(nq):
        for j, c in enumerate(cands):
            qs = [queries[k, i] for k in range(q_count)]
            if name == "ova":
                out[i, j] = ref.ova_score_pair(c, np.stack(qs), 1e-8)
            elif name == "clip":
                out[i, j] = np.mean([_unit(q) @ _unit(c) for q in qs])
            elif name == "symile":
                out[i, j] = np.sum(np.prod(np.stack([*qs, c]), axis=0))
            elif name == "gram":
                out[i, j] = -ref.gram_volume([c, *qs])
            elif name == "triangle":
                out[i, j] = -ref.triangle_area(c, *qs)
    return out


@pytest.mark.parametrize("name", ["ova", "clip", "symile", "gram", "triangle"])
@pytest.mark.parametrize("q_count", [1, 2, 3])
def test_scorer_matches_literal(name, q_count):
    if name == "triangle" and q_count != 2:
        pytest.skip("TRIANGLE scores exactly two query modalities")
    queries = jax.random.normal(jax.random.key(q_count), (q_count, 5, 6))
    cands = jax.random.normal(jax.random.key(10 + q_count), (7, 6))
    scorer = getattr(losses, f"{name}_score")
    got = np.asarray(scorer(queries, cands))
    expected = _literal(name, np.asarray(queries, np.float64), np.asarray(cands, np.float64))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


def test_registry_maps_every_objective_to_a_scorer():
    for name in losses.names():
        assert callable(losses.get_scorer(name))
    with pytest.raises(ValueError, match="valid names"):
        losses.get_scorer("nope")
