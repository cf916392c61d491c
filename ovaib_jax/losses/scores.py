"""Retrieval scorers: each method scores a query set against candidates with its own
similarity (SPEC section 4).

A scorer maps query embeddings of a set of Q modalities ``(Q, Nq, d)`` and candidate
embeddings of one modality ``(Nc, d)`` to scores ``(Nq, Nc)`` (higher = more similar).
Per-query quantities (bases, products) are computed once, and the scores are one matmul.
Inputs: finite, with the norms the objectives support (below ~1.8e19 for the normalising
scores, see ``_core``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from ovaib_jax.losses import _core
from ovaib_jax.losses._basis import projected_sq_norm, span_basis
from ovaib_jax.losses.volume import neg_triangle_area


def _check(queries: jax.Array, cands: jax.Array, fn_name: str) -> tuple[jax.Array, jax.Array]:
    queries, cands = jnp.asarray(queries), jnp.asarray(cands)
    if queries.ndim != 3 or cands.ndim != 2 or queries.shape[2] != cands.shape[1]:
        raise ValueError(
            f"{fn_name}: expected queries of shape (Q, Nq, d) and candidates of shape "
            f"(Nc, d) with the same d; got {tuple(queries.shape)} and {tuple(cands.shape)}."
        )
    return queries.astype(jnp.float32), cands.astype(jnp.float32)


def ova_score(
    queries: jax.Array, cands: jax.Array, *, lam: float = 1e-8, product_weight: float = 0.0
) -> jax.Array:
    """OVA-IB: ``cos(c_j, P_i c_j) = ||P_i c^_j||``, P_i projecting onto span{queries of i};
    with ``product_weight`` w, plus ``w cos(c_j, prod_q queries[q, i])`` (as
    :func:`~ovaib_jax.losses.ova_sufficiency` trains with it).

    Args:
      queries: (Q, Nq, d). cands: (Nc, d).
      lam: rank guard > 0, as in training. product_weight: w >= 0.

    Returns:
      (Nq, Nc) scores in [0, 1] (in [-w, 1 + w] with the product term).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> scores = losses.ova_score(z[:2], z[2])  # queries (Q, Nq, d), candidates (Nc, d)
      >>> scores.shape, bool((scores.argmax(axis=1) == jnp.arange(8)).all())
      ((8, 8), True)
    """
    _core.check_hyperparameter(lam, "lam", "ova_score", "positive")
    _core.check_hyperparameter(product_weight, "product_weight", "ova_score", "non_negative")
    queries, cands = _check(queries, cands, "ova_score")
    basis, _ = span_basis(jnp.moveaxis(queries, 0, 1), lam)  # (Nq, Q, d)
    unit = _core.l2_normalize(cands)
    score = _core.safe_sqrt(projected_sq_norm(unit, basis).T)
    if product_weight:
        prod = _core.l2_normalize(jnp.prod(_core.l2_normalize(queries), axis=0))
        score = score + product_weight * (prod @ unit.T)
    return score


def projector_score(
    queries: jax.Array, cands: jax.Array, *, projector: Callable, m: int
) -> jax.Array:
    """OVA with a projector (the MLP ablation, :func:`~ovaib_jax.losses.product_projector`):
    ``cos(projector(queries, m)_i, c_j)``, as in training.

    Args:
      queries: (M-1, Nq, d) embeddings of every modality but the candidates', in order.
      cands: (Nc, d) embeddings of modality ``m``.
      projector: ``projector(rest, m) -> (Nq, d)``, the one the objective was trained with.
      m: the candidates' modality index.

    Returns:
      (Nq, Nc) scores in [-1, 1].
    """
    queries, cands = _check(queries, cands, "projector_score")
    pred = jnp.asarray(projector(queries, m), jnp.float32)
    return _core.l2_normalize(pred) @ _core.l2_normalize(cands).T


def clip_score(queries: jax.Array, cands: jax.Array) -> jax.Array:
    """Pairwise CLIP: mean over query modalities q of ``cos(z[q, i], c_j)``. (Nq, Nc).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> scores = losses.clip_score(z[:2], z[2])  # queries (Q, Nq, d), candidates (Nc, d)
      >>> scores.shape, bool((scores.argmax(axis=1) == jnp.arange(8)).all())
      ((8, 8), True)
    """
    queries, cands = _check(queries, cands, "clip_score")
    mean_q = jnp.mean(_core.l2_normalize(queries), axis=0)
    return mean_q @ _core.l2_normalize(cands).T


def symile_score(queries: jax.Array, cands: jax.Array) -> jax.Array:
    """Symile: multilinear inner product ``MIP(z[q_1, i], ..., z[q_Q, i], c_j)``. (Nq, Nc).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> scores = losses.symile_score(z[:2], z[2])  # queries (Q, Nq, d), candidates (Nc, d)
      >>> scores.shape, bool((scores.argmax(axis=1) == jnp.arange(8)).all())
      ((8, 8), True)
    """
    queries, cands = _check(queries, cands, "symile_score")
    return jnp.prod(queries, axis=0) @ cands.T


def gram_score(queries: jax.Array, cands: jax.Array) -> jax.Array:
    """GRAM: ``-Vol(c^_j, z^[q, i] for q in Q)`` of the normalised vectors. (Nq, Nc).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> scores = losses.gram_score(z[:2], z[2])  # queries (Q, Nq, d), candidates (Nc, d)
      >>> scores.shape, bool((scores.argmax(axis=1) == jnp.arange(8)).all())
      ((8, 8), True)
    """
    queries, cands = _check(queries, cands, "gram_score")
    basis, r = span_basis(jnp.moveaxis(queries, 0, 1), 1e-8)
    c = _core.l2_normalize(cands)
    # |c|^2 - |P c|^2: a zero candidate (normalised to 0) has volume 0, not the queries'.
    residual = jnp.maximum(jnp.sum(c * c, axis=-1)[:, None] - projected_sq_norm(c, basis), 0.0)
    return -_core.safe_sqrt(jnp.prod(r, axis=-1)[:, None] * residual.T)


def triangle_score(queries: jax.Array, cands: jax.Array) -> jax.Array:
    """TRIANGLE: ``-area(z^[q_1, i], z^[q_2, i], c^_j)`` (Q = 2 query modalities). (Nq, Nc).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> scores = losses.triangle_score(z[:2], z[2])  # queries (Q, Nq, d), candidates (Nc, d)
      >>> scores.shape, bool((scores.argmax(axis=1) == jnp.arange(8)).all())
      ((8, 8), True)
    """
    queries, cands = _check(queries, cands, "triangle_score")
    if queries.shape[0] != 2:
        raise ValueError(
            f"triangle_score: needs exactly Q = 2 query modalities, got queries of shape "
            f"{tuple(queries.shape)}."
        )
    q1, q2 = _core.l2_normalize(queries)
    c = _core.l2_normalize(cands)

    # The triangle (c, q1, q2) with c as the shared vertex: u = c - q1, w = c - q2.
    def sq(v):
        return jnp.sum(v * v, axis=-1)

    k = jnp.sum(q1 * q2, axis=-1)[:, None]
    return neg_triangle_area(
        q1 @ c.T, q2 @ c.T, k, sq(c)[None, :], sq(q1)[:, None], sq(q2)[:, None]
    )  # (Nq, Nc)
