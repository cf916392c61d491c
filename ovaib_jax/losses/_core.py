"""Shared machinery of every objective: input checks, safe normalisation, collectives and
the blocked (chunked, sharded) InfoNCE engine.

Conventions used throughout ``ovaib_jax.losses``:

* ``z`` has shape ``(M, N, d)``: M modalities, N samples (the *local* batch when called
  inside ``jax.shard_map`` with ``axis_name``), embedding dimension d.
* A *score* ``s[i, j]`` is the raw similarity of query i (a local sample) and candidate j
  (a global sample, gathered from all devices); *logits* are ``s * scale``.
* Every objective returns ``(loss, aux)``: ``loss`` a float32 scalar, identical on every
  device; ``aux`` a flat dict of float32 scalars with ``"/"``-separated keys.

All arithmetic is done in float32 (bfloat16 inputs are upcast on entry; gradients flow
back in the input dtype).

Supported input range: finite embeddings whose L2 norms lie in about [1e-12, 1.8e19).
The normalising objectives (all but Symile) are invariant to the norm inside that range.
Below 1e-12 a vector is treated as (near) zero (see ``l2_normalize``). Above ~1.8e19 =
sqrt(float32 max) the float32 sum of squares overflows to inf, the normalised vector
becomes 0 and every score of that vector is equal: the loss silently tends to log N per
term. No check is made at run time (it would need a host sync per call): normalise or
rescale such embeddings upstream. Symile does not normalise: its multilinear products of
M vectors must stay below float32 max (~3.4e38).

Scalar hyper-parameters (temperatures, weights, ridge terms) given as Python or NumPy
numbers are validated on entry by :func:`check_hyperparameter` (type and range, one
clear error naming the parameter); JAX arrays and tracers (a learnable temperature, a
schedule inside ``jit``) pass through unchecked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

AxisName = Any  # a mesh axis name or a tuple of them, as accepted by jax.lax collectives.

# Squared-norm floor of the normalisation: a vector of norm < 1e-12 is scaled by 1e12
# instead of 1/|x|. Norms down to 1e-12 are exact, and the floor is high enough that the
# derivative of rsqrt at the floor (floor^-1.5 / 2) stays finite in float32: a lower floor
# turns the chain rule's inf * 0 into NaN gradients for zero vectors.
_NORM_FLOOR_SQ = 1e-24
# Floor of a squared score before a square root (gradient of sqrt is infinite at 0).
SQRT_FLOOR = 1e-12
_LOWEST = float(jnp.finfo(jnp.float32).min)


# --------------------------------------------------------------------------- checks


def check_embeddings(
    z: jax.Array,
    fn_name: str,
    *,
    min_modalities: int = 2,
    num_modalities: int | None = None,
) -> jax.Array:
    """Validates ``z`` of shape ``(M, N, d)`` and returns it as float32.

    Only the shape and dtype are checked (no host sync): values must be finite, with norms
    in the supported range of the module docstring (below ~1.8e19).

    Raises:
      ValueError: naming the shape received and the one expected.
    """
    z = jnp.asarray(z)
    if z.ndim != 3:
        raise ValueError(
            f"{fn_name}: expected embeddings z of shape (M, N, d) = (modalities, batch, "
            f"embedding dim), got an array of shape {tuple(z.shape)} (rank {z.ndim}). "
            "Stack the per-modality embeddings with jnp.stack([z_1, ..., z_M])."
        )
    m, n, d = z.shape
    if num_modalities is not None and m != num_modalities:
        raise ValueError(
            f"{fn_name}: is defined for exactly M = {num_modalities} modalities; got z of "
            f"shape {tuple(z.shape)} (M = {m})."
        )
    if m < min_modalities:
        raise ValueError(
            f"{fn_name}: needs at least M = {min_modalities} modalities; got z of shape "
            f"{tuple(z.shape)} (M = {m}); expected (M >= {min_modalities}, N, d)."
        )
    if n < 1 or d < 1:
        raise ValueError(f"{fn_name}: empty batch or embedding: z has shape {tuple(z.shape)}.")
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise ValueError(
            f"{fn_name}: z must be a floating-point array, got dtype {z.dtype} (an integer "
            "or boolean array); cast the embeddings with z.astype(jnp.float32)."
        )
    return z.astype(jnp.float32)


def check_modality_index(index: int, m: int, what: str, fn_name: str) -> int:
    """Returns ``index`` as a non-negative modality index or raises a ValueError."""
    if not isinstance(index, int) or not -m <= index < m:
        raise ValueError(f"{fn_name}: {what}={index!r} is not a modality index for M = {m}.")
    return index % m


# Valid ranges of scalar hyper-parameters: name -> (test on a finite float, description).
_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "positive": (lambda v: v > 0, "> 0"),
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "unit_interval": (lambda v: 0 <= v < 1, "in [0, 1)"),
}


def check_hyperparameter(value: Any, name: str, fn_name: str, valid: str) -> Any:
    """Validates a scalar hyper-parameter given as a Python or NumPy number; returns
    ``value`` unchanged.

    JAX arrays (tracers included) and NumPy arrays pass through unchecked: a learnable
    temperature or a schedule is traced inside ``jit`` / ``grad``, and checking a concrete
    device value would cost a host sync per call.

    Args:
      value: the hyper-parameter.
      name: its argument name, for the message.
      fn_name: the public function, for the message.
      valid: ``"positive"`` (finite, > 0), ``"non_negative"`` (finite, >= 0) or
        ``"unit_interval"`` (in [0, 1)).

    Raises:
      TypeError: ``value`` is not a real number (a bool, a string, None, ...).
      ValueError: ``value`` is not finite or outside its range.
    """
    test, desc = _RANGES[valid]
    if isinstance(value, (jax.Array, np.ndarray)):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            f"{fn_name}: {name} must be a real number {desc} (a Python int or float, or a "
            f"JAX array when traced), got {value!r} of type {type(value).__name__}."
        )
    v = float(value)
    if not (math.isfinite(v) and test(v)):
        raise ValueError(f"{fn_name}: {name} must be a finite number {desc}, got {value!r}.")
    return value


def check_chunk_size(chunk_size: int | None, fn_name: str) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(
            f"{fn_name}: chunk_size must be a positive int or None, got {chunk_size!r}."
        )


# --------------------------------------------------------------------------- numerics


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """``x / |x|`` along ``axis``; a (near-)zero vector maps to (near-)zero, gradients finite."""
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, _NORM_FLOOR_SQ))


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(max(x, 1e-12))``: value error <= 1e-6 near 0, no infinite gradient."""
    return jnp.sqrt(jnp.maximum(x, SQRT_FLOOR))


# --------------------------------------------------------------------------- collectives


def axis_size(axis_name: AxisName | None) -> int:
    return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def all_gather(x: Any, axis_name: AxisName | None, *, axis: int = 0) -> Any:
    """Concatenates axis ``axis`` (default the leading one) of every leaf across devices
    (identity unsharded)."""
    if axis_name is None:
        return x
    return jax.tree.map(lambda a: jax.lax.all_gather(a, axis_name, axis=axis, tiled=True), x)


def psum(x: Any, axis_name: AxisName | None) -> Any:
    return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmax(x: jax.Array, axis_name: AxisName | None) -> jax.Array:
    return x if axis_name is None else jax.lax.pmax(x, axis_name)


def row_offset(n_local: int, axis_name: AxisName | None) -> jax.Array:
    """Global index of this device's first sample (the batch is sharded contiguously)."""
    if axis_name is None:
        return jnp.zeros((), jnp.int32)
    return (jax.lax.axis_index(axis_name) * n_local).astype(jnp.int32)


def global_mean(x: jax.Array, n_global: int, axis_name: AxisName | None) -> jax.Array:
    """Mean over the global batch of per-sample values ``x`` of shape (n_local,)."""
    return psum(jnp.sum(x), axis_name) / n_global


# --------------------------------------------------------------------------- InfoNCE engine


class RowStats(NamedTuple):
    """Per local query row, over all (global) candidate columns. Shapes (n,)."""

    lse: jax.Array  # logsumexp of logits over the candidates in the denominator
    pos: jax.Array  # raw positive score s[i, i]
    logit_sum: jax.Array  # sum of logits over all valid candidates (label smoothing)
    neg_max: jax.Array  # max raw negative score (no gradient)
    score_sum: jax.Array  # sum of raw scores over valid candidates (no gradient)


class ColStats(NamedTuple):
    """Per global candidate column, over all (global) query rows. Shapes (n_cols,).

    Replicated: every device holds the same values (reduced across devices).
    """

    lse: jax.Array
    pos: jax.Array  # raw positive score s[j, j] (no gradient)
    logit_sum: jax.Array
    neg_max: jax.Array


class Contrast(NamedTuple):
    rows: RowStats
    cols: ColStats | None
    n_rows_global: int
    n_cols: int
    smoothing: bool


def contrast(
    score_block: Callable[[jax.Array], jax.Array],
    *,
    n_rows: int,
    n_cols: int,
    scale: jax.Array | float,
    axis_name: AxisName | None = None,
    chunk_size: int | None = None,
    exclude_positive: bool = False,
    positive: jax.Array | None = None,
    symmetric: bool = False,
    smoothing: bool = False,
) -> Contrast:
    """Statistics of the InfoNCE score matrix, computed block by block.

    The (n_rows x n_cols) matrix of raw scores ``s`` is never formed whole when
    ``chunk_size`` is set: columns are visited in blocks of ``chunk_size`` with an online
    logsumexp (``lax.scan``), and each block is rematerialised in the backward pass
    (``jax.checkpoint``), so memory is O(n_rows x chunk_size). Without ``chunk_size`` the
    whole row block is one matrix (fastest; memory O(n_rows x n_cols)).

    Args:
      score_block: ``cols (C,) int32 -> (n_rows, C)`` raw scores of the local rows against
        the global candidate columns ``cols``: always ``C`` consecutive valid indices
        (slice per-candidate arrays with :func:`block_rows`).
      n_rows: local number of query rows n.
      n_cols: global number of candidate columns.
      scale: multiplies scores into logits (``1 / tau``).
      axis_name: mesh axis the rows are sharded over (inside ``jax.shard_map``), or None.
      chunk_size: candidate columns per block, or None for one block.
      exclude_positive: leave the positive out of the denominator (the paper's literal
        ``sum_{n' != n}``); the default keeps it (standard InfoNCE).
      positive: optional (n_rows,) raw scores replacing the diagonal entries (Symile's
        shuffled negatives put the true positive tuple on the diagonal this way).
      symmetric: also compute column statistics (softmax over rows for each column), as
        needed by symmetric (two-direction) losses; reduced across devices per block.
      smoothing: also sum the logits of every row (and column), as label smoothing needs;
        off by default to save passes over the score blocks.

    The positive of local row i is global column ``row_offset + i``.
    """
    n_dev = axis_size(axis_name)
    offset = row_offset(n_rows, axis_name)
    block = n_cols if chunk_size is None else min(chunk_size, n_cols)
    n_blocks = -(-n_cols // block)
    row_ids = offset + jnp.arange(n_rows, dtype=jnp.int32)
    neg_inf = jnp.float32(-jnp.inf)
    if n_blocks == 1:
        s = score_block(jnp.arange(n_cols, dtype=jnp.int32)).astype(jnp.float32)
        rows, cols = _whole_matrix_stats(
            s,
            row_ids=row_ids,
            scale=scale,
            axis_name=axis_name,
            exclude_positive=exclude_positive,
            positive=positive,
            symmetric=symmetric,
            smoothing=smoothing,
        )
        return Contrast(rows, cols, n_rows * n_dev, n_cols, smoothing)

    def block_stats(b):
        # Block b covers the new columns [b * block, ...). The last block is shifted back
        # to end at n_cols (so every block is a full, in-bounds slice: no padding, and a
        # single block is the identity slice); columns it shares with the previous block
        # are masked out.
        first = b * block
        cols = jnp.minimum(first, n_cols - block) + jnp.arange(block, dtype=jnp.int32)
        valid = cols >= first
        s = score_block(cols).astype(jnp.float32)
        is_pos = (cols[None, :] == row_ids[:, None]) & valid[None, :]
        if positive is not None:
            s = jnp.where(is_pos, positive[:, None], s)
        logits = s * scale
        in_lse = valid[None, :] & ~is_pos if exclude_positive else valid[None, :]
        masked = jnp.where(in_lse, logits, neg_inf)
        is_neg = valid[None, :] & ~is_pos
        r_max = jax.lax.stop_gradient(jnp.max(masked, axis=1))
        # An empty block (all masked) keeps the lowest finite max, so merges stay exact.
        r_max = jnp.where(jnp.isfinite(r_max), r_max, _LOWEST)
        zeros = jnp.zeros_like(r_max)
        rows = (
            r_max,
            jnp.sum(jnp.exp(masked - r_max[:, None]), axis=1),
            jnp.sum(jnp.where(is_pos, s, 0.0), axis=1),
            jnp.sum(jnp.where(valid[None, :], logits, 0.0), axis=1) if smoothing else zeros,
            jax.lax.stop_gradient(jnp.max(jnp.where(is_neg, s, neg_inf), axis=1)),
            jax.lax.stop_gradient(jnp.sum(jnp.where(valid[None, :], s, 0.0), axis=1)),
        )
        if not symmetric:
            return rows, None
        c_max = pmax(jax.lax.stop_gradient(jnp.max(masked, axis=0)), axis_name)
        c_max = jnp.where(jnp.isfinite(c_max), c_max, _LOWEST)
        c_sum = psum(jnp.sum(jnp.exp(masked - c_max[None, :]), axis=0), axis_name)
        # Masked (already counted) columns have an empty sum: keep log() away from 0.
        c_lse = jnp.where(valid, c_max + jnp.log(jnp.where(valid, c_sum, 1.0)), 0.0)
        c_logit_sum = jnp.sum(jnp.where(valid[None, :], logits, 0.0), axis=0)
        cols_out = ColStats(
            lse=c_lse,
            pos=jax.lax.stop_gradient(psum(jnp.sum(jnp.where(is_pos, s, 0.0), axis=0), axis_name)),
            logit_sum=psum(c_logit_sum, axis_name) if smoothing else jnp.zeros_like(c_lse),
            neg_max=pmax(
                jax.lax.stop_gradient(jnp.max(jnp.where(is_neg, s, neg_inf), axis=0)), axis_name
            ),
        )
        return rows, cols_out

    def merge(carry, new):
        m0, s0, p0, l0, n0, t0 = carry
        m1, s1, p1, l1, n1, t1 = new
        m = jnp.maximum(m0, m1)
        return (
            m,
            s0 * jnp.exp(m0 - m) + s1 * jnp.exp(m1 - m),
            p0 + p1,
            l0 + l1,
            jnp.maximum(n0, n1),
            t0 + t1,
        )

    # Several blocks (one block is handled above, without masks): the first block
    # initialises the carry (so that carries have the same device-varying type inside
    # shard_map), the scan folds in the others.
    stats_fn = jax.checkpoint(block_stats)
    rows, cols0 = stats_fn(0)

    def body(carry, b):
        new_rows, new_cols = stats_fn(b)
        return merge(carry, new_rows), new_cols

    rows, cols_rest = jax.lax.scan(body, rows, jnp.arange(1, n_blocks))
    cols = None
    if symmetric:
        # Column j's statistics come from the one block where j is valid: a static
        # index into the blocks' concatenated outputs.
        owner = np.empty(n_cols, np.int64)
        for b in range(n_blocks):
            start = min(b * block, n_cols - block)
            for c in range(block):
                if start + c >= b * block:
                    owner[start + c] = b * block + c
        cols = jax.tree.map(
            lambda a, r: jnp.concatenate([a, r.reshape(-1)])[owner], cols0, cols_rest
        )
    m, s, pos, logit_sum, neg_max, score_sum = rows
    row_stats = RowStats(
        lse=m + jnp.log(s), pos=pos, logit_sum=logit_sum, neg_max=neg_max, score_sum=score_sum
    )
    return Contrast(row_stats, cols, n_rows * n_dev, n_cols, smoothing)


def _whole_matrix_stats(
    s: jax.Array,
    *,
    row_ids: jax.Array,
    scale: jax.Array | float,
    axis_name: AxisName | None,
    exclude_positive: bool,
    positive: jax.Array | None,
    symmetric: bool,
    smoothing: bool,
) -> tuple[RowStats, ColStats | None]:
    """:func:`contrast`'s statistics when all candidate columns form one block.

    The same values as the blocked path, with fewer passes over the score matrix ``s``
    (rows x all columns): no validity masks, and the positive of each row read with a
    gather (its transpose scatters into the gradient) instead of a masked row sum.
    """
    n_cols = s.shape[1]
    is_pos = jnp.arange(n_cols, dtype=jnp.int32)[None, :] == row_ids[:, None]
    if positive is None:
        pos = jnp.take_along_axis(s, row_ids[:, None], axis=1)[:, 0]
    else:
        s = jnp.where(is_pos, positive[:, None], s)
        pos = positive.astype(jnp.float32)
    rows = _one_block_stats(s, is_pos, pos, scale, exclude_positive, smoothing, axis=1)
    if not symmetric:
        return rows, None
    # Column statistics are reduced across devices (every device holds all columns).
    neg_inf = jnp.float32(-jnp.inf)
    logits = s * scale
    masked = jnp.where(is_pos, neg_inf, logits) if exclude_positive else logits
    negatives = jnp.where(is_pos, neg_inf, s)
    c_max = pmax(jax.lax.stop_gradient(jnp.max(masked, axis=0)), axis_name)
    c_max = jnp.where(jnp.isfinite(c_max), c_max, _LOWEST)
    c_sum = psum(jnp.sum(jnp.exp(masked - c_max[None, :]), axis=0), axis_name)
    c_lse = c_max + jnp.log(c_sum)
    cols = ColStats(
        lse=c_lse,
        pos=jax.lax.stop_gradient(psum(jnp.sum(jnp.where(is_pos, s, 0.0), axis=0), axis_name)),
        logit_sum=psum(jnp.sum(logits, axis=0), axis_name) if smoothing else jnp.zeros_like(c_lse),
        neg_max=pmax(jax.lax.stop_gradient(jnp.max(negatives, axis=0)), axis_name),
    )
    return rows, cols


def _one_block_stats(
    s: jax.Array,
    is_pos: jax.Array,
    pos: jax.Array,
    scale: jax.Array | float,
    exclude_positive: bool,
    smoothing: bool,
    axis: int,
) -> RowStats:
    """The query statistics of one whole block ``s``, reduced over ``axis`` (1: queries are
    rows, candidates columns; 0: the reverse), ``is_pos`` marking each query's positive
    (same shape as s) and ``pos`` its raw positive scores."""
    neg_inf = jnp.float32(-jnp.inf)
    logits = s * scale
    masked = jnp.where(is_pos, neg_inf, logits) if exclude_positive else logits
    neg_max = jax.lax.stop_gradient(jnp.max(jnp.where(is_pos, neg_inf, s), axis=axis))
    if isinstance(scale, (int, float)) and scale > 0:
        # A positive constant scale keeps the order: the max of the logits is the scaled
        # max of the scores (exactly, in float32), so no pass of its own.
        r_max = jax.lax.stop_gradient(
            scale * (neg_max if exclude_positive else jnp.maximum(neg_max, pos))
        )
    else:
        r_max = jax.lax.stop_gradient(jnp.max(masked, axis=axis))
    r_max = jnp.where(jnp.isfinite(r_max), r_max, _LOWEST)
    lse = r_max + jnp.log(jnp.sum(jnp.exp(masked - jnp.expand_dims(r_max, axis)), axis=axis))
    return RowStats(
        lse=lse,
        pos=pos,
        logit_sum=jnp.sum(logits, axis=axis) if smoothing else jnp.zeros_like(lse),
        neg_max=neg_max,
        score_sum=jax.lax.stop_gradient(jnp.sum(s, axis=axis)),
    )


def column_stats_as_rows(
    s: jax.Array, *, scale: jax.Array | float, exclude_positive: bool = False
) -> RowStats:
    """The row statistics of ``s.T`` without forming the transpose: every reduction is
    over axis 0 of ``s`` (N, N). Unsharded, one block, the positive of query j in s[j, j].
    The same values as :func:`contrast` of ``s.T``."""
    is_pos = jnp.eye(s.shape[0], dtype=bool)
    return _one_block_stats(s, is_pos, jnp.diagonal(s), scale, exclude_positive, False, axis=0)


class InfoNCE(NamedTuple):
    """Losses and diagnostics of one contrast, all global scalars."""

    loss_rows: jax.Array
    loss_cols: jax.Array | None
    accuracy_rows: jax.Array
    accuracy_cols: jax.Array | None
    pos_mean: jax.Array
    neg_mean: jax.Array


def infonce(
    c: Contrast,
    *,
    scale: jax.Array | float,
    axis_name: AxisName | None = None,
    label_smoothing: float = 0.0,
) -> InfoNCE:
    """Cross-entropy of each row (and column) against its positive.

    With label smoothing eps the target puts ``1 - eps`` on the positive and ``eps``
    spread uniformly over all candidates (the positive included), as in
    ``optax.softmax_cross_entropy`` with smoothed one-hot labels.

    Top-1 accuracy counts a row as correct when its positive scores strictly above every
    negative (ties count as errors).
    """
    r = c.rows
    n = c.n_rows_global
    if label_smoothing and not c.smoothing:
        raise ValueError("label smoothing needs contrast(..., smoothing=True).")
    pos_logit = r.pos * scale
    target = (1.0 - label_smoothing) * pos_logit + label_smoothing * r.logit_sum / c.n_cols
    loss_rows = global_mean(r.lse - target, n, axis_name)
    acc_rows = global_mean((r.pos > r.neg_max).astype(jnp.float32), n, axis_name)
    pos_total = psum(jnp.sum(jax.lax.stop_gradient(r.pos)), axis_name)
    score_total = psum(jnp.sum(r.score_sum), axis_name)
    n_neg = max(n * c.n_cols - n, 1)
    loss_cols = acc_cols = None
    if c.cols is not None:
        k = c.cols
        # Column j's positive is s[j, j] = rows' positive of sample j: sum once over j.
        pos_logit_total = psum(jnp.sum(pos_logit), axis_name)
        smooth_total = jnp.sum(k.logit_sum) / n
        loss_cols = (
            jnp.sum(k.lse)
            - (1.0 - label_smoothing) * pos_logit_total
            - label_smoothing * smooth_total
        ) / c.n_cols
        acc_cols = jnp.mean((k.pos > k.neg_max).astype(jnp.float32))
    return InfoNCE(
        loss_rows=loss_rows,
        loss_cols=loss_cols,
        accuracy_rows=acc_rows,
        accuracy_cols=acc_cols,
        pos_mean=pos_total / n,
        neg_mean=(score_total - pos_total) / n_neg,
    )


def mean_of_terms(
    results: Sequence[InfoNCE], prefix: str, log_n: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The mean row loss of one contrast per modality m, with its diagnostics.

    Returns:
      ``(loss, aux)``; aux: ``{prefix}`` (= loss), ``{prefix}/m{m}``, ``mi_bound/m{m}``
      (``log_n - L_m``), ``accuracy/m{m}``, ``accuracy``, ``pos_score``, ``neg_score``.
    """
    aux: dict[str, jax.Array] = {}
    for m, r in enumerate(results):
        aux[f"{prefix}/m{m}"] = r.loss_rows
        aux[f"mi_bound/m{m}"] = log_n - r.loss_rows
        aux[f"accuracy/m{m}"] = r.accuracy_rows
    loss = mean_of([r.loss_rows for r in results])
    aux[prefix] = loss
    aux["accuracy"] = mean_of([r.accuracy_rows for r in results])
    aux["pos_score"] = mean_of([r.pos_mean for r in results])
    aux["neg_score"] = mean_of([r.neg_mean for r in results])
    return loss, aux


def block_rows(x: Any, cols: jax.Array, *, axis: int = 0) -> Any:
    """Rows ``cols`` (consecutive indices, as given to a ``score_block``) along axis
    ``axis`` (default the leading one) of every leaf of ``x``: a dynamic slice, i.e. the
    identity for a single block and no scatter in the backward pass (a gather's
    transpose)."""
    return jax.tree.map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, cols[0], cols.shape[0], axis=axis), x
    )


def mean_of(values: Sequence[jax.Array]) -> jax.Array:
    return sum(values) / len(values)
