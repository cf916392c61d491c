"""Retrieval scorers (SPEC section 4) against literal per-pair NumPy versions."""

import chex
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
            elif name == "heads":  # default shares 0.25, 0.25 of d = 5: 3 + 1 + 1
                span = np.stack([q[:3] for q in qs])
                prod = np.prod(np.stack([_unit(q[3:4]) for q in qs]), axis=0)
                out[i, j] = ref.ova_score_pair(c[:3], span, 1e-8) + _unit(prod) @ _unit(c[3:4])
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


@pytest.mark.parametrize("name", ["gram", "triangle"])
def test_volume_scorers_with_zero_embeddings_match_literal(name):
    """A zero query or candidate (normalised to 0) gets the literal volume or area of the
    zero vector, not that of a unit vector (TRIANGLE's expansion once assumed unit
    norms)."""
    queries = np.array(jax.random.normal(jax.random.key(30), (2, 5, 6)))
    cands = np.array(jax.random.normal(jax.random.key(31), (7, 6)))
    queries[0, 1] = 0.0
    queries[1, 3] = 0.0
    cands[2] = 0.0
    got = np.asarray(getattr(losses, f"{name}_score")(queries, cands))
    expected = _literal(name, queries.astype(np.float64), cands.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=2e-4, atol=2e-5)


# Each objective's own similarity (SPEC section 4), as named in ``_literal``.
OWN_SCORE = {
    "ova_ib": "ova",
    "ova_sufficiency": "ova",
    "pairwise_clip": "clip",
    "pairwise_clip_ib": "clip",
    "anchor_clip": "clip",
    "symile": "symile",
    "gram": "gram",
    "triangle": "triangle",
    "confu": "clip",
    "comm": "clip",
    "ova_ib_comm": "ova",
    "ova_ib_heads": "heads",
}


def test_registry_maps_every_objective_to_its_own_score():
    assert set(OWN_SCORE) == set(losses.names())
    queries = jax.random.normal(jax.random.key(20), (2, 4, 5))  # Q = 2: every scorer applies
    cands = jax.random.normal(jax.random.key(21), (6, 5))
    q64, c64 = np.asarray(queries, np.float64), np.asarray(cands, np.float64)
    for name, kind in OWN_SCORE.items():
        got = jax.jit(losses.get_scorer(name))(queries, cands)
        chex.assert_trees_all_close(
            got, _literal(kind, q64, c64), rtol=2e-4, atol=2e-5, custom_message=name
        )
    with pytest.raises(ValueError, match="valid names"):
        losses.get_scorer("nope")
