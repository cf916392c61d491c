"""Geometric baselines: GRAM (Cicchetti et al., ICLR 2025) and TRIANGLE (NeurIPS 2025).

SPEC section 3. Both contrast the anchor modality of sample i with the tuple of the other
modalities of sample j through a geometric measure of the L2-normalised vectors, with a
cross-entropy in both directions (the matrix and its transpose) averaged, and label
smoothing 0.1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ovaib_jax.losses import _core
from ovaib_jax.losses._basis import projected_sq_norm, span_basis
from ovaib_jax.losses.ova import remaining

# Rank guard of the non-anchor bases (relative to unit vectors): keeps degenerate spans
# finite; their Gram determinant, hence the volume, is ~0 anyway.
_RANK_GUARD = 1e-8


def _two_way_loss(
    score_block,
    *,
    n: int,
    n_global: int,
    tau: jax.Array | float,
    label_smoothing: float,
    axis_name: _core.AxisName | None,
    chunk_size: int | None,
    prefix: str,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean of the row (anchor -> tuple) and column (tuple -> anchor) cross-entropies."""
    scale = 1.0 / tau
    stats = _core.contrast(
        score_block,
        n_rows=n,
        n_cols=n_global,
        scale=scale,
        axis_name=axis_name,
        chunk_size=chunk_size,
        symmetric=True,
        smoothing=bool(label_smoothing),
    )
    res = _core.infonce(stats, scale=scale, axis_name=axis_name, label_smoothing=label_smoothing)
    loss = 0.5 * (res.loss_rows + res.loss_cols)
    log_n = math.log(n_global)
    aux = {
        prefix: loss,
        f"{prefix}/anchor_to_rest": res.loss_rows,
        f"{prefix}/rest_to_anchor": res.loss_cols,
        # With label smoothing these are diagnostics, not exact bounds.
        "mi_bound/anchor_to_rest": log_n - res.loss_rows,
        "mi_bound/rest_to_anchor": log_n - res.loss_cols,
        "accuracy/anchor_to_rest": res.accuracy_rows,
        "accuracy/rest_to_anchor": res.accuracy_cols,
        "accuracy": 0.5 * (res.accuracy_rows + res.accuracy_cols),
        "pos_score": res.pos_mean,
        "neg_score": res.neg_mean,
    }
    return loss, aux


def gram(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    anchor: int = 0,
    label_smoothing: float = 0.1,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRAM: ``logits[i, j] = -Vol(z^[a, i], z^[-a, j]) / tau`` (SPEC section 3).

    ``Vol = sqrt(|det G|)`` of the Gram matrix of the M L2-normalised vectors (anchor of
    sample i, the other modalities of sample j). Efficient form: with an orthonormal basis
    Q_j of the span of sample j's non-anchor vectors and their Gram determinant g_j,
    ``det G = g_j * (1 - ||Q_j z^_a||^2)``, so each N x N block is one matmul against the
    stacked bases (the same per-candidate bases as OVA-IB), never a determinant per pair.

    Decisions: tau fixed at the paper's 0.01 by default (the GRAM repo learns it from
    0.07: pass a traced value); the repo's extra data-anchor matching loss needs a
    cross-encoder and is out of scope. The CE is averaged over both directions.

    Args:
      z: (M, N, d) embeddings, M >= 2; finite, norms below ~1.8e19 (float32 squares
        overflow there and the loss silently becomes log N; see ``_core``).
      tau: temperature > 0 (finite, may be traced).
      anchor: index of the anchor modality (text in the GRAM repo).
      label_smoothing: of the cross-entropy targets (0.1 in the repo), a Python number
        in [0, 1).
      axis_name, chunk_size: sharding and blocking, as in every objective.

    Returns:
      ``(loss, aux)``; aux: ``gram`` (= loss), ``gram/anchor_to_rest``,
      ``gram/rest_to_anchor``, accuracies, ``pos_score`` / ``neg_score`` (mean score,
      i.e. minus the volume).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.gram(z, tau=0.1)
      >>> float(aux["accuracy"])
      1.0
    """
    name = "gram"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(label_smoothing, "label_smoothing", name, "unit_interval")
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    m_count, n, _ = z.shape
    a = _core.check_modality_index(anchor, m_count, "anchor", name)
    n_global = n * _core.axis_size(axis_name)
    q, r = span_basis(jnp.moveaxis(remaining(z, a), 0, 1), lam=_RANK_GUARD)
    basis, det_rest = _core.all_gather((q, jnp.prod(r, axis=-1)), axis_name)
    anchors = _core.l2_normalize(z[a])
    # |anchor|^2: 1, or 0 for a zero embedding (whose volume is then 0, not the rest's).
    anchor_sq = jnp.sum(anchors * anchors, axis=-1)[:, None]

    def score_block(cols):
        b, g = _core.block_rows((basis, det_rest), cols)
        residual = jnp.maximum(anchor_sq - projected_sq_norm(anchors, b), 0.0)
        return -_core.safe_sqrt(g[None, :] * residual)

    return _two_way_loss(
        score_block,
        n=n,
        n_global=n_global,
        tau=tau,
        label_smoothing=label_smoothing,
        axis_name=axis_name,
        chunk_size=chunk_size,
        prefix="gram",
    )


def neg_triangle_area(
    x: jax.Array,
    y: jax.Array,
    k: jax.Array,
    shared_sq: jax.Array,
    sq1: jax.Array,
    sq2: jax.Array,
) -> jax.Array:
    """``-(|u|^2 |w|^2 - (u.w)^2) / 2`` of the triangle with shared vertex s and the two
    others p1, p2 (``u = s - p1``, ``w = s - p2``), from the dot products ``x = s.p1``,
    ``y = s.p2``, ``k = p1.p2`` and the squared norms (1 for a unit vector, 0 for a zero
    embedding normalised to 0): ``|u|^2 = |s|^2 + |p1|^2 - 2x``, ``|w|^2 = |s|^2 + |p2|^2
    - 2y``, ``u.w = |s|^2 - x - y + k``. Arrays broadcast (rows x candidates)."""
    u_sq = shared_sq + sq1 - 2.0 * x
    w_sq = shared_sq + sq2 - 2.0 * y
    return -0.5 * (u_sq * w_sq - jnp.square(shared_sq - x - y + k))


def triangle(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    anchor: int = 0,
    label_smoothing: float = 0.1,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """TRIANGLE (M = 3 only): ``logits[i, j] = -area(l_i, v_j, a_j) / tau``.

    With L2-normalised anchor l and the two other modalities v, a (in modality order):
    ``u = l_i - v_j``, ``w = l_i - a_j``,
    ``area = (|u|^2 |w|^2 - (u.w)^2) / 2`` (no square root, as in the repo). Expanded with
    ``x = l.v``, ``y = l.a``, ``c = v.a``: ``|u|^2 = |l|^2 + |v|^2 - 2x``,
    ``|w|^2 = |l|^2 + |a|^2 - 2y``, ``u.w = |l|^2 - x - y + c`` (for unit vectors
    ``((2 - 2x)(2 - 2y) - (1 - x - y + c)^2) / 2``; the squared norms are kept so that a
    zero embedding, normalised to 0, gets its literal area): two matmuls and per-row and
    per-candidate dot products. Same two-way cross-entropy, label smoothing, arguments
    and supported input range as :func:`gram`.

    Returns:
      ``(loss, aux)`` as :func:`gram` with the ``triangle`` prefix.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.triangle(z, tau=0.1)
      >>> float(aux["accuracy"])
      1.0
    """
    name = "triangle"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(label_smoothing, "label_smoothing", name, "unit_interval")
    z = _core.check_embeddings(z, name, num_modalities=3)
    _core.check_chunk_size(chunk_size, name)
    _, n, _ = z.shape
    a = _core.check_modality_index(anchor, 3, "anchor", name)
    n_global = n * _core.axis_size(axis_name)
    zn = _core.l2_normalize(z)
    sq = jnp.sum(zn * zn, axis=-1)  # (3, n): 1, or 0 for a zero embedding
    rest = remaining(zn, a)  # (2, n, d)
    v_sq, a_sq = remaining(sq, a)
    c = jnp.sum(rest[0] * rest[1], axis=-1)
    cands = _core.all_gather((rest[0], rest[1], c, v_sq, a_sq), axis_name)
    anchors, l_sq = zn[a], sq[a][:, None]

    def score_block(cols):
        v, w, c, v_sq, a_sq = _core.block_rows(cands, cols)
        return neg_triangle_area(
            anchors @ v.T, anchors @ w.T, c[None, :], l_sq, v_sq[None, :], a_sq[None, :]
        )

    return _two_way_loss(
        score_block,
        n=n,
        n_global=n_global,
        tau=tau,
        label_smoothing=label_smoothing,
        axis_name=axis_name,
        chunk_size=chunk_size,
        prefix="triangle",
    )
