"""Orthonormal bases of small spans, computed once per candidate.

The One-vs-All projection score and the GRAM volume both reduce, per (query, candidate)
pair, to the squared norm of the query's projection onto the span of the candidate's K
vectors. With an orthonormal basis Q (K x d) of that span, ``||P z||^2 = ||Q z||^2``, so
for a whole batch it is one matmul of the queries with all stacked bases. The basis is
built by modified Gram-Schmidt with explicit arithmetic (batched LAPACK factorisations and
their gradients are very slow on CPU in JAX), with a soft rank guard ``lam``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ovaib_jax.losses._core import l2_normalize


def span_basis(
    a: jax.Array, lam: float = 1e-8, *, normalized: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Guarded orthonormal basis of the span of K vectors, for a batch of spans.

    The vectors are first L2-normalised (the lam -> 0 projection is invariant to the scale
    and sign of each spanning vector, so this only fixes the meaning of ``lam``). Then
    modified Gram-Schmidt: ``v_k = a_k - sum_{j<k} (q_j . a_k) q_j``, ``r_k = |v_k|^2``,
    ``q_k = v_k / sqrt(r_k + lam)``.

    The guard weights direction k of the projection by ``r_k / (r_k + lam)``: 1 for a
    well-conditioned span (exact projection up to ``lam``), 0 for a direction that is
    already in the span of the previous ones (duplicated or collinear vectors) or a zero
    vector. It is the ridge shrinkage ``sigma^2 / (sigma^2 + lam)`` of the paper's
    ``A (A^T A + lam I)^-1 A^T``, taken along the Gram-Schmidt directions rather than the
    singular ones (identical as lam -> 0), and it keeps values and gradients finite on
    rank-deficient spans.

    Args:
      a: (..., K, d) spanning vectors.
      lam: rank guard (relative, since the vectors are normalised).
      normalized: the caller passes already L2-normalised vectors (skips that pass).

    Returns:
      q: (..., K, d) the guarded orthonormal basis.
      r: (..., K) squared Gram-Schmidt residual norms; ``prod(r)`` is the Gram
        determinant of the normalised vectors (squared K-volume).
    """
    a = a.astype(jnp.float32) if normalized else l2_normalize(a.astype(jnp.float32))
    k = a.shape[-2]
    qs, rs = [], []
    for i in range(k):
        v = a[..., i, :]
        for q in qs:
            v = v - jnp.sum(q * v, axis=-1, keepdims=True) * q
        r = jnp.sum(v * v, axis=-1)
        qs.append(v * jax.lax.rsqrt(r + lam)[..., None])
        rs.append(r)
    return jnp.stack(qs, axis=-2), jnp.stack(rs, axis=-1)


def projected_sq_norm(x: jax.Array, basis: jax.Array) -> jax.Array:
    """``||Q_j x_i||^2`` for every pair: one matmul against all stacked bases.

    Args:
      x: (n, d) queries.
      basis: (C, K, d) one basis per candidate.

    Returns:
      (n, C) squared norms of the projections.
    """
    c, k, d = basis.shape
    proj = x @ basis.reshape(c * k, d).T  # (n, C*K)
    return jnp.sum(jnp.square(proj.reshape(x.shape[0], c, k)), axis=-1)
