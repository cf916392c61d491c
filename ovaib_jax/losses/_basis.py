"""Orthonormal bases of small spans, computed once per candidate.

The One-vs-All projection score and the GRAM volume both reduce, per (query, candidate)
pair, to the squared norm of the query's projection onto the span of the candidate's K
vectors. With an orthonormal basis Q (K x d) of that span, ``||P z||^2 = ||Q z||^2``, so
for a whole batch it is one matmul of the queries with all stacked bases. The basis is
built by modified Gram-Schmidt with explicit arithmetic (batched LAPACK factorisations and
their gradients are very slow on CPU in JAX), with a soft rank guard ``lam``.

OVA-IB needs the basis of every leave-one-out set of the M embeddings of a candidate:
:func:`leave_one_out_bases` builds all M of them from one shared Gram-Schmidt pass (the
leave-one-out sets that keep modalities 0..m-1 share those first basis vectors, and every
later vector starts from where the shared pass left it), with exactly the arithmetic of
:func:`span_basis` on each set: about M^3/6 vector projections instead of M^3/2.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from ovaib_jax.losses._core import l2_normalize


def _project_out(q: jax.Array, v: jax.Array) -> jax.Array:
    """``v - (q . v) q`` along the last axis (one modified Gram-Schmidt step)."""
    return v - jnp.sum(q * v, axis=-1, keepdims=True) * q


def _guarded_unit(v: jax.Array, lam) -> tuple[jax.Array, jax.Array]:
    """``(v / sqrt(|v|^2 + lam), |v|^2)``: the guarded normalisation of a residual."""
    r = jnp.sum(v * v, axis=-1)
    return v * jax.lax.rsqrt(r + lam)[..., None], r


def guarded_gram_schmidt(
    vectors: Sequence[jax.Array], lam=1e-8
) -> tuple[list[jax.Array], list[jax.Array]]:
    """Modified Gram-Schmidt with the soft rank guard, on a list of K arrays (..., d).

    ``v_k = a_k - sum_{j<k} (q_j . v) q_j`` (sequentially), ``r_k = |v_k|^2``,
    ``q_k = v_k / sqrt(r_k + lam)``: see :func:`span_basis` for the meaning of the guard.

    Returns:
      ``(qs, rs)``: K arrays (..., d) and K arrays (...).
    """
    qs, rs = [], []
    for a in vectors:
        v = a
        for q in qs:
            v = _project_out(q, v)
        q, r = _guarded_unit(v, lam)
        qs.append(q)
        rs.append(r)
    return qs, rs


def gram_schmidt_with_coefficients(
    vectors: Sequence[jax.Array], lam=1e-8
) -> tuple[list[jax.Array], list[list[jax.Array]]]:
    """:func:`guarded_gram_schmidt` (the same arithmetic on the vectors), and each basis
    vector as a combination of the inputs: ``q_k = sum_{i <= k} c[k][i] * vectors[i]``.

    The coefficients replay the pass's arithmetic with its scalars (projection
    coefficients and guarded inverse norms taken from the vectors): a residual norm
    derived from the small Gram matrices instead would lose ~1e-7 / r of accuracy on
    nearly collinear inputs (tests/losses/test_basis.py), while these scalars keep the
    accuracy of the basis. Differentiable by automatic differentiation (K <= M vectors of
    (..., d): O(K^2) small operations).

    Args:
      vectors: K arrays (..., d).
      lam: rank guard, as in :func:`span_basis`.

    Returns:
      ``(qs, c)``: K arrays (..., d), and ``c[k]`` a list of k + 1 arrays (...).
    """
    qs: list[jax.Array] = []
    coefs: list[list[jax.Array]] = []
    for k, a in enumerate(vectors):
        v = a
        c = [jnp.zeros(a.shape[:-1], a.dtype) for _ in range(k)] + [jnp.ones(a.shape[:-1], a.dtype)]
        for q, cq in zip(qs, coefs):
            t = jnp.sum(q * v, axis=-1)
            v = v - t[..., None] * q
            c = [ci - t * cqi for ci, cqi in zip(c, cq)] + c[len(cq) :]
        q, r = _guarded_unit(v, lam)
        inv = jax.lax.rsqrt(r + lam)
        qs.append(q)
        coefs.append([ci * inv for ci in c])
    return qs, coefs


def continue_gram_schmidt(basis: Sequence[jax.Array], vectors: Sequence[jax.Array], lam=1e-8):
    """The guarded Gram-Schmidt vectors of ``vectors`` after the basis vectors ``basis``
    (already computed, e.g. by :func:`gram_schmidt_with_coefficients`): the last
    ``len(vectors)`` outputs of :func:`guarded_gram_schmidt` of ``basis``'s inputs
    followed by ``vectors``. Returns ``len(vectors)`` arrays (..., d)."""
    out: list[jax.Array] = []
    for a in vectors:
        v = a
        for q in (*basis, *out):
            v = _project_out(q, v)
        out.append(_guarded_unit(v, lam)[0])
    return out


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
    qs, rs = guarded_gram_schmidt([a[..., i, :] for i in range(a.shape[-2])], lam)
    return jnp.stack(qs, axis=-2), jnp.stack(rs, axis=-1)


def leave_one_out_bases(
    vectors: Sequence[jax.Array], lam=1e-8, sets: Sequence[int] | None = None
) -> list[jax.Array]:
    """The guarded bases of the M leave-one-out sets of M vectors, from one shared pass.

    Basis m spans every vector but vector m, in order: it equals (same operations, same
    rounding) :func:`span_basis` of ``[vectors[k] for k != m]`` with ``normalized=True``.
    The sets that keep vectors 0..m-1 share their first m basis vectors (the guarded
    Gram-Schmidt basis ``q_0..q_{m-1}`` of those vectors), and a later vector k > m enters
    set m's Gram-Schmidt already orthogonalised against them: that partial residual is an
    intermediate of the shared pass. Only the remaining projections, among the vectors
    after m, are done per set. Cost: C(M, 2) + C(M, 3) - 1 vector projections (9 at M = 4,
    83 at M = 8) instead of M C(M-1, 2) (12 and 168).

    Differentiable in reverse mode (``grad``, ``vjp``) through a hand-written VJP that
    replays the projections backwards from the saved residuals (XLA's fusion of the
    automatic one was 2-3 times slower on CPU). Forward-mode differentiation (``jvp``,
    ``jacfwd``, ``hessian``) of it is not supported.

    Args:
      vectors: M >= 2 arrays (..., d) (the caller normalises them: the guard is relative).
      lam: rank guard, as in :func:`span_basis` (may be traced; it gets a gradient).
      sets: the left-out indices m whose bases are wanted (default: all M, in order).
        Only the operations those bases need are done (forward and backward), with
        the same arithmetic: a basis is the same whichever others are built with it.

    Returns:
      One array (M-1, ..., d) per set m (basis m, basis vectors first, stacked for one
      matmul), in the order of ``sets``.
    """
    vectors = tuple(jnp.asarray(v, jnp.float32) for v in vectors)
    m_count = len(vectors)
    sets = tuple(range(m_count)) if sets is None else tuple(int(m) for m in sets)
    if not sets or any(not 0 <= m < m_count for m in sets):
        raise ValueError(f"leave_one_out_bases: sets {sets} must be indices in [0, {m_count}).")
    return list(_loo_bases(vectors, jnp.asarray(lam, jnp.float32), sets))


@functools.cache
def _loo_tape(m_count: int, sets: tuple[int, ...] | None = None) -> tuple[tuple, int, tuple]:
    """The operations of :func:`leave_one_out_bases` for M vectors, on value ids.

    Ids 0..M-1 are the inputs. An operation is ``("proj", q, v_in, v_out)``
    (``v_out = v_in - (q . v_in) q``) or ``("unit", v, q)`` (``q = v / sqrt(|v|^2 +
    lam)``). Returns (operations, number of values, ids of the bases' vectors), for the
    leave-one-out sets ``sets`` (default all M): only the operations their bases need,
    in the order of the whole tape (the value ids are those of the whole tape).
    """
    ops, count, bases = _full_loo_tape(m_count)
    if sets is None:
        return ops, count, bases
    bases = tuple(bases[m] for m in sets)
    needed = {i for ids in bases for i in ids}
    kept = []
    for op in reversed(ops):  # a value is needed if a needed value is made from it
        if op[-1] in needed:
            kept.append(op)
            needed.update(op[1:-1])
    return tuple(reversed(kept)), count, bases


@functools.cache
def _full_loo_tape(m_count: int) -> tuple[tuple, int, tuple]:
    """:func:`_loo_tape` of all M sets: the shared pass, then each set's own projections."""
    ops: list[tuple] = []
    count = [m_count]

    def new() -> int:
        count[0] += 1
        return count[0] - 1

    prefix: list[int] = []  # guarded basis of vectors[:j], shared by the sets m >= j
    partial = [[k] for k in range(m_count)]  # partial[k][j]: vector k minus its part on prefix[:j]
    for k in range(m_count):
        v = k
        # Vector k needs k projections for its own prefix vector (k <= M-2); the last vector
        # only needs the residuals that start the sets m <= M-2.
        for j in range(min(k, m_count - 2)):
            out = new()
            ops.append(("proj", prefix[j], v, out))
            v = out
            partial[k].append(v)
        if k < m_count - 1:
            q = new()
            ops.append(("unit", v, q))
            prefix.append(q)
    bases = []
    for m in range(m_count):
        tail: list[int] = []
        for k in range(m + 1, m_count):
            v = partial[k][m]
            for b in tail:
                out = new()
                ops.append(("proj", b, v, out))
                v = out
            q = new()
            ops.append(("unit", v, q))
            tail.append(q)
        bases.append(tuple(prefix[:m] + tail))
    return tuple(ops), count[0], tuple(bases)


def _loo_run(vectors: tuple, lam: jax.Array, sets: tuple[int, ...]) -> tuple[list, dict]:
    """Forward pass of the tape of ``sets``: every value (None where the tape does not
    make it), and each operation's scalar factor (the projection coefficient ``t`` of a
    "proj", ``1 / sqrt(|v|^2 + lam)`` of a "unit")."""
    ops, count, _ = _loo_tape(len(vectors), sets)
    val = list(vectors) + [None] * (count - len(vectors))
    factor = {}
    for op in ops:
        if op[0] == "proj":
            _, q, v_in, v_out = op
            t = jnp.sum(val[q] * val[v_in], axis=-1, keepdims=True)
            val[v_out] = val[v_in] - t * val[q]
            factor[v_out] = t
        else:
            _, v, q = op
            s = jax.lax.rsqrt(jnp.sum(val[v] * val[v], axis=-1) + lam)[..., None]
            val[q] = val[v] * s
            factor[q] = s
    return val, factor


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _loo_bases(vectors: tuple, lam: jax.Array, sets: tuple[int, ...]) -> tuple:
    return _loo_bases_fwd(vectors, lam, sets)[0]


def _loo_bases_fwd(vectors: tuple, lam: jax.Array, sets: tuple[int, ...]):
    val, factor = _loo_run(vectors, lam, sets)
    ids_of = _loo_tape(len(vectors), sets)[2]
    bases = tuple(jnp.stack([val[i] for i in ids]) for ids in ids_of)
    return bases, (tuple(val), factor, lam)


def _loo_bases_bwd(sets, res, cotangents):
    val, factor, lam = res
    n_in = len(cotangents[0]) + 1  # a basis has M - 1 vectors
    ops, count, bases = _loo_tape(n_in, sets)
    grad: list[jax.Array | None] = [None] * count
    for ids, ct in zip(bases, cotangents):
        for j, i in enumerate(ids):
            grad[i] = ct[j] if grad[i] is None else grad[i] + ct[j]
    factors = tuple(factor[op[-1]] for op in ops)
    return _replay_backward(ops, n_in, val, factors, lam, grad)


def _replay_backward(ops, n_in, val, factors, lam, grad):
    """The tape ``ops`` (on ``n_in`` inputs) replayed backwards from the values'
    cotangents ``grad`` (a list over value ids, None where zero), with each operation's
    saved scalar factor (``factors``, in operation order, shape (..., 1)): ``t = q .
    v_in`` of a projection, ``s = (|v|^2 + lam)^(-1/2)`` of a normalisation. Returns the
    inputs' cotangents and lam's."""

    def add(i: int, g: jax.Array) -> None:
        grad[i] = g if grad[i] is None else grad[i] + g

    d_lam = jnp.zeros((), jnp.float32)
    for op, f in zip(reversed(ops), reversed(factors)):
        g = grad[op[-1]]
        if g is None:
            continue
        if op[0] == "proj":  # v_out = v_in - t q, t = q . v_in
            _, q, v_in, _ = op
            d_t = -jnp.sum(val[q] * g, axis=-1, keepdims=True)
            add(v_in, g + d_t * val[q])
            add(q, d_t * val[v_in] - f * g)
        else:  # q = v s, s = (|v|^2 + lam)^(-1/2)
            _, v, _ = op
            d_s = jnp.sum(val[v] * g, axis=-1, keepdims=True)
            add(v, f * g - (f * f * f * d_s) * val[v])
            d_lam = d_lam - 0.5 * jnp.sum(f * f * f * d_s)
    # Inside shard_map a replicated lam's cotangent is the sum of every device's part.
    extra = tuple(sorted(_varying_axes(d_lam) - _varying_axes(lam)))
    if extra:
        d_lam = jax.lax.psum(d_lam, extra)
    inputs = tuple(jnp.zeros_like(val[i]) if grad[i] is None else grad[i] for i in range(n_in))
    return inputs, d_lam


def _varying_axes(x: jax.Array) -> frozenset:
    """The mesh axes ``x`` varies over inside ``jax.shard_map`` (empty elsewhere)."""
    axis_type = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(getattr(axis_type, "varying", ()) or ())


_loo_bases.defvjp(_loo_bases_fwd, _loo_bases_bwd)


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
