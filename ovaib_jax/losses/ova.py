"""The OVA-IB objective: One-vs-All sufficiency bound + One-vs-All minimality regulariser.

SPEC sections 1 and 2. For every modality m, z_m is contrasted against the *tuple of the
remaining modalities* of each candidate sample, scored by the parameter-free projection
score ``s = cos(z_m, P_{-m} z_m) = ||P_{-m} z_m|| / ||z_m||`` where ``P_{-m}`` projects
onto the span of the candidate's remaining embeddings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ovaib_jax.losses import _core
from ovaib_jax.losses._basis import (
    continue_gram_schmidt,
    gram_schmidt_with_coefficients,
    guarded_gram_schmidt,
    leave_one_out_bases,
)

Projector = Callable[[jax.Array, int], jax.Array]


def remaining(z: jax.Array, m: int) -> jax.Array:
    """(M-1, N, d): the embeddings of every modality but m, in modality order."""
    return jnp.concatenate([z[:m], z[m + 1 :]], axis=0)


def product_projector(rest: jax.Array, m: int) -> jax.Array:
    """A parameter-free, sign-aware projector: the elementwise product of the remaining
    embeddings, (M-1, K, d) -> (K, d).

    With ``projector=product_projector`` the score is ``cos(z_m, prod_{j != m} z_j)``, a
    normalised multilinear (Symile-like) score inside OVA's one-vs-all InfoNCE: flipping
    the sign of one remaining embedding flips the score (the span, and so the projection
    score, does not move), and it can express multiplicative (parity) dependence that a
    span test cannot (docs/RESULTS.md, section 1). Not in the paper: an extension.

    The factors are normalised before the product (the cosine does not change): a raw
    product of M-1 embeddings of norm 1e-6 (or 1e6) under- (or over-)flows float32.
    """
    del m
    return jnp.prod(_core.l2_normalize(rest), axis=0)


NEGATIVE_MODES = ("batch", "shuffled")


def shuffled_rows(rest: jax.Array, key: jax.Array | None) -> jax.Array:
    """Permutes the rows of each of the (M-1) remaining modalities independently.

    Args:
      rest: (K, N, d) embeddings of K modalities.
      key: PRNG key, or None for deterministic cyclic shifts (modality k, counted from 1,
        row j -> row (j + k) mod N; distinct tuples when N > K).

    Returns:
      (K, N, d): candidate tuples drawn from the product of the marginals.
    """
    k_count, n, _ = rest.shape
    if key is None:
        perms = [(jnp.arange(n) + k) % n for k in range(1, k_count + 1)]
    else:
        perms = [jax.random.permutation(kk, n) for kk in jax.random.split(key, k_count)]
    return jnp.stack([jnp.take(rest[k], perms[k], axis=0) for k in range(k_count)])


def ova_sufficiency(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    lam: float = 1e-8,
    exclude_positive: bool = False,
    projector: Projector | None = None,
    product_weight: float | jax.Array = 0.0,
    negatives: str = "batch",
    key: jax.Array | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One-vs-All InfoNCE sufficiency loss ``L_S = (1/M) sum_m L_m`` (SPEC section 1).

    ``L_m = -(1/N) sum_n log softmax_{n'}(s(z[m, n], z[-m, n']) / tau)[n]``, with the
    parameter-free projection score ``s = ||Q_{n'} z^_{m,n}||`` where ``Q_{n'}`` is an
    orthonormal basis of the span of candidate n''s remaining embeddings and ``z^`` is
    the unit query. For M = 2 the score is ``|cos(z_1, z_2)|``.

    Efficient form (SPEC "Efficient forms" (a)): each candidate's bases are computed once
    (by guarded Gram-Schmidt, see :func:`~ovaib_jax.losses._basis.span_basis`; all M
    leave-one-out bases of a candidate share one pass,
    :func:`~ovaib_jax.losses._basis.leave_one_out_bases`), and each modality's N x N
    score matrix is one matmul of the unit queries with all stacked basis vectors followed
    by a sum of squares over the M-1 blocks of N columns. No N x N x d tensor, no per-pair
    solve. With batch negatives on one device (unsharded, or a mesh axis of size 1) in
    one block and M <= 8, the modalities are split in two halves and each candidate's
    span is orthogonalised the other half first: those basis vectors are per-candidate
    combinations of the other half's unit embeddings
    (:func:`~ovaib_jax.losses._basis.gram_schmidt_with_coefficients`), so the projections
    on them come from the pair matrices ``U_r U_c^T`` of an r and a c of different halves,
    each shared by its two modalities; the own half's basis vectors are met by one matmul
    each: |R| |C| + |R| (|R|-1) + |C| (|C|-1) matmuls instead of M (M-1) (8 instead of 12
    at M = 4, 40 instead of 56 at M = 8), with the same accuracy (the combinations'
    scalars come from Gram-Schmidt on the vectors).
    The score is ``sqrt(||Q z^||^2 + 1e-12)`` (within 1e-6 of the norm, finite gradient
    at 0). Reverse-mode differentiation only (the shared bases and the combinations
    carry hand-written VJPs): ``jax.grad`` / ``jax.vjp``, not ``jax.jvp`` /
    ``jax.jacfwd``.

    Decisions (SPEC):
      * ``lam`` is the paper's ridge term (1e-8). The basis form uses it as a relative rank
        guard on the *normalised* remaining embeddings (exact as lam -> 0, where the score
        is invariant to the scale and sign of each remaining embedding). The guard acts
        along the Gram-Schmidt directions, so it depends on the order, by O(lam): every
        path takes a candidate's remaining modalities in :func:`span_order` (the other
        half of the modalities first), so sharded, chunked and one-device batches
        compute one score.
      * ``exclude_positive=False`` (default) keeps the positive in the denominator
        (standard InfoNCE, for which ``I(z_m; z_-m) >= log N - L_m``); True gives the
        paper's literal ``sum_{n' != n}`` (then ``log N - L_m`` is reported but is not
        a bound).
      * ``tau`` fixed at 0.01 as in the paper; pass a traced value for a learnable
        temperature (the model owns it).

    Args:
      z: (M, N, d) embeddings, M >= 2 (N local when sharded); finite, norms below ~1.8e19
        (float32 squares overflow there and the loss silently becomes log N; see
        ``_core``). The score is invariant to the norms in that range.
      tau: temperature > 0 (scalar, may be traced).
      lam: rank guard / ridge term > 0 (may be traced).
      exclude_positive: see above.
      projector: the "OVA + MLP projector" ablation (paper Table 4): a callable
        ``projector(rest, m) -> (K, d)`` mapping remaining embeddings ``rest`` of shape
        (M-1, K, d) to a prediction of z_m for each of the K tuples; the score is then
        ``cos(z_m, projector(rest, m))``. It must act per tuple.
      product_weight: w >= 0 (an extension, not in the paper): the score becomes
        ``||Q_{n'} z^_{m,n}|| + w cos(z[m, n], prod_{j != m} z[j, n'])``, the projection
        score plus the sign-aware product score of :func:`product_projector`. The
        projection is blind to the sign of each remaining embedding, so it cannot
        express dependence such as c = a XOR b; the product term can, and the projection
        keeps the linear (span) dependence the product score misses. A Python float (0:
        the paper's score, no product term computed) or a scalar JAX array (a weight
        learned in training, traced: the product term is always computed then, and the
        caller keeps it >= 0, e.g. as exp of a parameter). Not with ``projector``.
      negatives: ``"batch"`` (default, the paper): candidate n' is the true tuple of
        remaining modalities of sample n'. ``"shuffled"`` (an extension, not in the
        paper): as Symile's "n" negatives, the rows of each remaining modality are
        permuted independently, so negative tuples come from the product of the
        marginals and the positive (the true tuple) replaces the diagonal. With "batch"
        negatives the loss cannot reward dependence that is only visible jointly against
        tuples that are themselves jointly consistent; "shuffled" contrasts the joint
        against the product of the marginals. Candidates' per-tuple quantities are then
        computed on the gathered global batch on every device. Needs M >= 3 (an error
        at M = 2, where the one remaining modality's permuted rows are the batch's own
        vectors: each query's positive would also stand among its negatives).
      key: PRNG key for "shuffled" (same on every device); None gives deterministic
        cyclic shifts (see :func:`shuffled_rows`).
      axis_name: mesh axis the batch is sharded over, inside ``jax.shard_map``.
      chunk_size: candidates per block (memory O(N_local x chunk_size)).

    Returns:
      ``(loss, aux)``; aux: ``sufficiency`` (= loss), ``sufficiency/m{m}`` (L_m),
      ``mi_bound/m{m}`` (log N - L_m: a lower bound on I(z_m; z_-m) with batch
      negatives, on the total correlation TC(z) with shuffled ones, docs/THEORY.md 3''),
      ``accuracy`` and ``accuracy/m{m}`` (in-batch top-1 of retrieving sample n's
      remaining tuple from z_m), ``pos_score`` and ``neg_score`` (mean raw scores).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.ova_sufficiency(z, tau=0.1)
      >>> float(aux["accuracy"]), sorted(k for k in aux if k.startswith("mi_bound"))
      (1.0, ['mi_bound/m0', 'mi_bound/m1', 'mi_bound/m2'])
    """
    z = _check_sufficiency_args(
        z, tau, lam, exclude_positive, projector, product_weight, negatives, axis_name, chunk_size
    )
    return _sufficiency(
        z,
        [_core.l2_normalize(x) for x in _modalities(z)],
        tau=tau,
        lam=lam,
        exclude_positive=exclude_positive,
        projector=projector,
        product_weight=_weight(product_weight),
        negatives=negatives,
        key=key,
        axis_name=axis_name,
        chunk_size=chunk_size,
    )


def _weight(w: float | jax.Array) -> float | jax.Array:
    """A Python (or NumPy) weight as a float, a JAX array (learned, traced) as float32."""
    return w.astype(jnp.float32) if isinstance(w, jax.Array) else float(w)


def _has_product(w: float | jax.Array) -> bool:
    """Whether the score has the product term: a nonzero float, or any array (traced)."""
    return isinstance(w, jax.Array) or bool(w)


def _check_sufficiency_args(
    z, tau, lam, exclude_positive, projector, product_weight, negatives, axis_name, chunk_size
) -> jax.Array:
    """Validates :func:`ova_sufficiency`'s arguments (errors name it); returns z as float32."""
    name = "ova_sufficiency"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(lam, "lam", name, "positive")
    _core.check_hyperparameter(product_weight, "product_weight", name, "non_negative")
    if negatives not in NEGATIVE_MODES:
        raise ValueError(f"{name}: negatives must be one of {NEGATIVE_MODES}, got {negatives!r}.")
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    if negatives == "shuffled" and z.shape[0] == 2:
        raise ValueError(
            f"{name}: negatives='shuffled' needs M >= 3 modalities, got M = 2. With one "
            "remaining modality its shuffled rows are the batch's own vectors: the same "
            "negatives as negatives='batch', plus a copy of each query's positive among "
            "them. Use negatives='batch'."
        )
    n_global = z.shape[1] * _core.axis_size(axis_name)
    if exclude_positive and n_global < 2:
        raise ValueError(f"{name}: exclude_positive=True needs a batch of N >= 2, got {n_global}.")
    if isinstance(product_weight, (jax.Array, np.ndarray)) and np.ndim(product_weight) != 0:
        raise ValueError(
            f"{name}: product_weight must be a scalar; got shape {np.shape(product_weight)}."
        )
    if _has_product(product_weight) and projector is not None:
        raise ValueError(
            f"{name}: product_weight must be >= 0 and cannot be combined with a projector; "
            f"got {product_weight} (projector {'set' if projector is not None else 'None'})."
        )
    return z


def _modalities(z: jax.Array) -> list[jax.Array]:
    """The M embeddings (N, d) of ``z`` as a list. A split, whose transpose is one
    concatenation (slicing z[m] would pad each modality's gradient back to (M, N, d))."""
    return [x[0] for x in jnp.split(z, z.shape[0])]


def _span_scores(q: jax.Array, cand: jax.Array, w: float | jax.Array | None) -> jax.Array:
    """Scores of queries ``q`` (n, d) against candidates ``cand`` (K', C, d): K' = M-1
    basis vectors of each candidate's span (plus, with a product weight ``w`` not None,
    its unit product last). One matmul against all stacked basis vectors, then a sum of
    squares over the K' blocks of C columns. Returns (n, C)."""
    k, c, d = cand.shape
    proj = (q @ cand.reshape(k * c, d).T).reshape(q.shape[0], k, c)
    if w is None:
        return _norm_of_squares(jnp.sum(jnp.square(proj), axis=1))
    span = _norm_of_squares(jnp.sum(jnp.square(proj[:, :-1]), axis=1))
    return span + w * proj[:, -1]


def _paired_span_scores(q: jax.Array, cand: jax.Array, w: float | jax.Array | None) -> jax.Array:
    """Score of query row i with candidate i: ``q`` (n, d), ``cand`` (K', n, d) -> (n,)."""
    proj = jnp.sum(cand * q[None], axis=-1)  # (K', n)
    if w is None:
        return _norm_of_squares(jnp.sum(jnp.square(proj), axis=0))
    return _norm_of_squares(jnp.sum(jnp.square(proj[:-1]), axis=0)) + w * proj[-1]


def _norm_of_squares(x: jax.Array) -> jax.Array:
    """``sqrt(x + 1e-12)`` of a sum of squares x >= 0: within 1e-6 of sqrt(x) (equal to
    ``_core.safe_sqrt`` at 0 and within float32 rounding above 1e-6), with the bounded
    gradient ``1 / (2 sqrt(x + 1e-12))`` everywhere, so that the backward pass needs no
    mask of the floored entries (one N x N array fewer per modality)."""
    return jnp.sqrt(x + _core.SQRT_FLOOR)


def _sufficiency(
    z: jax.Array,
    queries: list[jax.Array],
    *,
    tau,
    lam,
    exclude_positive: bool,
    projector: Projector | None,
    product_weight: float | jax.Array,
    negatives: str,
    key: jax.Array | None,
    axis_name: _core.AxisName | None,
    chunk_size: int | None,
    two_halves: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`ova_sufficiency` on validated inputs: ``z`` (M, N, d) float32 and
    ``queries`` the unit vectors of its M modalities (a list of (N, d)).
    ``two_halves=False`` keeps the stacked bases where the two-halves path would
    apply (the loss benchmark times both)."""
    name = "ova_sufficiency"
    m_count, n, d = z.shape
    n_global = n * _core.axis_size(axis_name)
    scale = 1.0 / tau
    keys = None if key is None else jax.random.split(key, m_count)
    w = product_weight if _has_product(product_weight) else None  # None: no product term

    def span_candidates(rest: list[jax.Array]) -> jax.Array:
        """K unit remaining embeddings (C, d) of C tuples -> (K', C, d): their guarded
        basis, with the unit product appended when ``w``."""
        cand, _ = guarded_gram_schmidt(rest, lam)
        if w is not None:
            cand.append(_core.l2_normalize(functools.reduce(jnp.multiply, rest)))
        return jnp.stack(cand)

    def projected(rest: jax.Array, m: int) -> jax.Array:
        """The MLP-projector ablation: (M-1, K, d) raw tuples -> (K, d) unit predictions."""
        pred = jnp.asarray(projector(rest, m), jnp.float32)
        if pred.shape != (rest.shape[1], d):
            raise ValueError(
                f"{name}: projector(rest, m) must return shape {(rest.shape[1], d)} "
                f"(K, d) for rest of shape {tuple(rest.shape)}; got {tuple(pred.shape)}."
            )
        return _core.l2_normalize(pred)

    if (
        m_count <= _PAIRS_MAX_M
        and projector is None
        and negatives == "batch"
        and _core.axis_size(axis_name) == 1
        and (chunk_size is None or chunk_size >= n)
        and two_halves
    ):
        return _halves_sufficiency(queries, lam, scale, exclude_positive, w, axis_name)
    if projector is None:
        # Every leave-one-out basis of the local tuples, from one shared Gram-Schmidt pass
        # (SPEC "Efficient forms" (a)): the candidates of "batch" negatives, the positives
        # of "shuffled" ones.
        local = _span_order_bases(queries, lam)
        if w is not None:
            local = [
                jnp.concatenate(
                    [b, _core.l2_normalize(functools.reduce(jnp.multiply, _rest(queries, m)))[None]]
                )
                for m, b in enumerate(local)
            ]
    results = []
    for m in range(m_count):
        q = queries[m]
        positive = None
        if projector is None:
            # Candidates (K', N_global, d): basis vectors first, the candidate axis second.
            if negatives == "batch":
                cands = _core.all_gather(local[m], axis_name, axis=1)
            else:
                rest_all = _core.all_gather(jnp.stack(_rest(queries, m)), axis_name, axis=1)
                shuffled = shuffled_rows(rest_all, None if keys is None else keys[m])
                natural = _rest(list(range(m_count)), m)  # shuffled's order
                order = [natural.index(i) for i in span_order(m, m_count)]
                cands = span_candidates([shuffled[i] for i in order])
                positive = _paired_span_scores(q, local[m], w)

            def score_block(cols, q=q, cands=cands):
                return _span_scores(q, _core.block_rows(cands, cols, axis=1), w)

        else:
            # The projector sees the raw remaining embeddings.
            rest = remaining(z, m)
            if negatives == "batch":
                cands = _core.all_gather(projected(rest, m), axis_name)
            else:
                rest_all = _core.all_gather(jnp.moveaxis(rest, 1, 0), axis_name)  # (N, M-1, d)
                shuffled = shuffled_rows(
                    jnp.moveaxis(rest_all, 0, 1), None if keys is None else keys[m]
                )
                cands = projected(shuffled, m)
                positive = jnp.sum(q * projected(rest, m), axis=-1)

            def score_block(cols, q=q, cands=cands):
                return q @ _core.block_rows(cands, cols).T

        stats = _core.contrast(
            score_block,
            n_rows=n,
            n_cols=n_global,
            scale=scale,
            axis_name=axis_name,
            chunk_size=chunk_size,
            exclude_positive=exclude_positive,
            positive=positive,
        )
        results.append(_core.infonce(stats, scale=scale, axis_name=axis_name))
    return _core.mean_of_terms(results, "sufficiency", math.log(n_global))


# The two-halves path is taken up to this M (it compiles in about 6 s forward+backward at
# M = 8, the stacked bases in 2-4 s). Timed against the floor (loss benchmark, N = 1024,
# d = 256, 2 CPU cores, 2026-12-02): 0.84 at M = 8 and 0.79 at M = 7, where the shared
# pairs of every modality (its earlier form) read 0.97 and 0.91 and the stacked bases
# 0.99 and 0.94; about the same as the shared pairs at M = 3-6.
_PAIRS_MAX_M = 8


def _rows_half(m_count: int) -> list[int]:
    """The modalities whose queries are the rows of their score matrices in the
    two-halves path (m <= (M-1)/2); the others' queries are the columns."""
    return [m for m in range(m_count) if _queries_as_rows(m, m_count)]


def span_order(m: int, m_count: int) -> list[int]:
    """The order in which a candidate's remaining modalities (all but m) are
    orthogonalised for modality m's score: the other half of the modalities first
    (:func:`_rows_half` and the rest), then m's own half, each in modality order. The
    span, and so the score as lam -> 0, does not depend on the order; the rank guard
    (weights along the Gram-Schmidt directions) does, by O(lam)."""
    rows = _rows_half(m_count)
    cols = [i for i in range(m_count) if i not in rows]
    first, second = (cols, rows) if m in rows else (rows, cols)
    return first + [i for i in second if i != m]


def _span_order_bases(queries: list[jax.Array], lam) -> list[jax.Array]:
    """Every modality's leave-one-out bases (M-1, N, d), each orthogonalised in
    :func:`span_order`: two shared passes, one over the modalities in order building the
    column-half modalities' bases, one over them starting at the column half building
    the row half's (each pass does only the work of its half's bases)."""
    m_count = len(queries)
    rows = _rows_half(m_count)
    cols = [i for i in range(m_count) if i not in rows]
    perm = cols + rows
    bases = dict(zip(cols, leave_one_out_bases(queries, lam, sets=cols)))
    rotated = [queries[i] for i in perm]
    bases.update(zip(rows, leave_one_out_bases(rotated, lam, sets=[perm.index(m) for m in rows])))
    return [bases[m] for m in range(m_count)]


def _halves_sufficiency(
    queries: list[jax.Array], lam, scale, exclude_positive: bool, w, axis_name
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`_sufficiency` with batch negatives on one device's whole batch, in one block.

    The modalities are split in two halves, R (m <= (M-1)/2) and C. For a modality of one
    half, a candidate's span is orthogonalised in :func:`span_order`: the other half H
    first, then the rest of the modality's own half. The first |H| basis vectors are the
    guarded Gram-Schmidt basis of H alone, the same for every modality of the half, and
    are written as per-candidate combinations of H's unit embeddings
    (:func:`~ovaib_jax.losses._basis.gram_schmidt_with_coefficients`): the query's
    projections on them are combinations of the pair matrices ``U_r U_c^T`` (r in R, c in
    C), each computed once and shared by its two modalities (read by rows for r, by
    columns for c, no transposed copy). The remaining basis vectors (the own half's,
    orthogonalised after H) are formed on the vectors and met by one matmul each.
    Matmuls of N x N x d forward: |R| |C| + sum over modalities of (own half - 1), 40 at
    M = 8 against 56 for the stacked bases (8 against 12 at M = 4); the element-wise
    combinations are over |H| <= M/2 + 1 pair matrices, not M - 1.
    ``queries``: the M unit embeddings (N, d); ``w`` the product weight or None.
    """
    m_count, n = len(queries), queries[0].shape[0]
    rows = _rows_half(m_count)
    cols = [i for i in range(m_count) if i not in rows]
    halves = {}
    for half in (rows, cols):
        basis, coefs = gram_schmidt_with_coefficients([queries[i] for i in half], lam)
        halves[tuple(half)] = (basis, tuple(tuple(c) for c in coefs))
    pairs = {(r, c): queries[r] @ queries[c].T for r in rows for c in cols}
    results = []
    for m in range(m_count):
        as_rows = m in rows
        other, own = (cols, rows) if as_rows else (rows, cols)
        basis, coefs = halves[tuple(other)]
        rest = continue_gram_schmidt(basis, [queries[i] for i in own if i != m], lam)
        if as_rows:  # s[n, k]: query n, candidate k
            mats = tuple(pairs[m, c] for c in other)
            direct = tuple(queries[m] @ b.T for b in rest)
        else:  # s[k, n]
            mats = tuple(pairs[r, m] for r in other)
            direct = tuple(b @ queries[m].T for b in rest)
        s = _span_norm(mats, coefs, direct, 1 if as_rows else 0)
        if w is not None:
            prod = _core.l2_normalize(functools.reduce(jnp.multiply, _rest(queries, m)))
            s = s + w * (queries[m] @ prod.T if as_rows else prod @ queries[m].T)
        if as_rows:
            stats = _core.contrast(
                lambda cols, s=s: s,
                n_rows=n,
                n_cols=n,
                scale=scale,
                axis_name=axis_name,
                exclude_positive=exclude_positive,
            )
        else:
            col_stats = _core.column_stats_as_rows(
                s, scale=scale, exclude_positive=exclude_positive
            )
            stats = _core.Contrast(col_stats, None, n, n, False)
        results.append(_core.infonce(stats, scale=scale, axis_name=axis_name))
    return _core.mean_of_terms(results, "sufficiency", math.log(n))


def _queries_as_rows(m: int, m_count: int) -> bool:
    """Whether the two-halves path gives modality m its queries as the rows of its score
    matrix (m <= (M-1)/2) rather than as its columns."""
    return 2 * m <= m_count - 1


def _span_combinations(mats: tuple, coefs: tuple, axis: int) -> list[jax.Array]:
    """``p_j = sum_{i <= j} c[j][i] * mats[i]``, each coefficient (N,) broadcast along the
    candidate ``axis`` of the (N, N) matrices (1: candidates are columns)."""

    def along(c):
        return jnp.expand_dims(c, 1 - axis)

    out = []
    for j, row in enumerate(coefs):
        p = along(row[0]) * mats[0]
        for i in range(1, j + 1):
            p = p + along(row[i]) * mats[i]
        out.append(p)
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _span_norm(mats: tuple, coefs: tuple, direct: tuple, axis: int) -> jax.Array:
    """The projection scores ``sqrt(sum_j p_j^2 + sum_k y_k^2 + 1e-12)`` (N, N) of the
    combinations ``p_j`` (:func:`_span_combinations`) and the direct projections
    ``direct`` (each (N, N)). A hand-written VJP: the backward pass forms ``r * p_j``
    again from ``mats`` (not kept from the forward) and the coefficient cotangents as
    sums of ``dp_j * mats[i]`` over the query axis (automatic differentiation of the same
    expression was slower; XLA still materialises some of the N x N intermediates, see
    the loss benchmark)."""
    total = sum(jnp.square(p) for p in _span_combinations(mats, coefs, axis))
    for y in direct:
        total = total + jnp.square(y)
    return _norm_of_squares(total)


def _span_norm_fwd(mats, coefs, direct, axis):
    s = _span_norm(mats, coefs, direct, axis)
    return s, (mats, coefs, direct, s)


def _span_norm_bwd(axis, res, g):
    mats, coefs, direct, s = res
    r = g / s  # d s / d p_j = p_j / s
    # dp_j = r * p_j, written as combinations of r * mats (not of the forward's p_j,
    # which common-subexpression elimination would then keep alive from the forward)
    rm = [r * x for x in mats]
    dp = _span_combinations(rm, coefs, axis)
    d_mats = []
    for i in range(len(mats)):
        d = 0.0
        for j in range(i, len(coefs)):
            d = d + jnp.expand_dims(coefs[j][i], 1 - axis) * dp[j]
        d_mats.append(d)
    d_coefs = tuple(
        tuple(jnp.sum(dp[j] * mats[i], axis=1 - axis) for i in range(j + 1))
        for j in range(len(coefs))
    )
    return tuple(d_mats), d_coefs, tuple(r * y for y in direct)


_span_norm.defvjp(_span_norm_fwd, _span_norm_bwd)


def _rest(xs: list[jax.Array], m: int) -> list[jax.Array]:
    """Every modality's array but m's, in modality order."""
    return xs[:m] + xs[m + 1 :]


def ova_minimality(
    z: jax.Array,
    *,
    normalize: bool = True,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One-vs-All minimality regulariser ``L_M = (1/M) sum_m L_M^m`` (SPEC section 2).

    ``L_M^m = mean_n || mu[m, n] - mean_{i != m} mu[i, n] ||^2``, the mu-dependent part of
    ``KL(p(z|x_m) || normalised prod_{i != m} p(z|x_i))`` for isotropic Gaussians, computed
    in O(M N d) with the running sum ``mean_{-m} = (S - mu_m) / (M - 1)``, i.e.
    ``||M mu_m - S||^2 / (M - 1)^2``.

    Decision: ``mu`` is the L2-normalised embedding (``normalize=True``, default): without
    it L_M is driven to 0 by shrinking every embedding while the cosine-based sufficiency
    term is unchanged.

    Args:
      z: (M, N, d) embeddings; finite, norms below ~1.8e19 with ``normalize`` (float32
        squares overflow there and the vector normalises to 0).
      normalize: use ``mu = z / |z|`` (default) or ``mu = z``.
      axis_name: mesh axis of the batch, inside ``jax.shard_map``.
      chunk_size: accepted for a uniform signature; the term has no N x N part.

    Returns:
      ``(loss, aux)``; aux: ``minimality`` and ``minimality/m{m}``.
    """
    name = "ova_minimality"
    z = _core.check_embeddings(z, name)
    _core.check_chunk_size(chunk_size, name)
    zs = _modalities(z)
    return _minimality([_core.l2_normalize(x) for x in zs] if normalize else zs, axis_name)


def _minimality(
    mu: list[jax.Array], axis_name: _core.AxisName | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """:func:`ova_minimality` of the M arrays ``mu`` (n, d) (unit or raw embeddings)."""
    m_count, n = len(mu), mu[0].shape[0]
    n_global = n * _core.axis_size(axis_name)
    # ||mu_m - (S - mu_m)/(M-1)||^2 = ||M mu_m - S||^2 / (M-1)^2, expanded into
    # reductions over d only (M^2 |mu_m|^2 - 2M mu_m.S + |S|^2): measured 4x cheaper
    # forward+backward on CPU than the broadcast difference over the modality axis, and
    # written elementwise (an einsum over the stacked modalities added transposes).
    total = sum(mu)  # S: (n, d)
    total_sq = jnp.sum(total * total, axis=-1)  # (n,)
    per_sample = jnp.stack(
        [
            m_count**2 * jnp.sum(x * x, axis=-1) - 2 * m_count * jnp.sum(x * total, axis=-1)
            for x in mu
        ]
    )
    per_sample = (per_sample + total_sq[None]) / (m_count - 1) ** 2  # (M, n)
    per_sample = jnp.maximum(per_sample, 0.0)  # rounding of the expansion near 0
    terms = _core.psum(jnp.sum(per_sample, axis=1), axis_name) / n_global  # (M,)
    loss = jnp.mean(terms)
    aux = {f"minimality/m{m}": terms[m] for m in range(m_count)}
    aux["minimality"] = loss
    return loss, aux


def ova_ib(
    z: jax.Array,
    *,
    tau: jax.Array | float = 0.01,
    beta: float = 1.0,
    lam: float = 1e-8,
    exclude_positive: bool = False,
    normalize_minimality: bool = True,
    projector: Projector | None = None,
    product_weight: float | jax.Array = 0.0,
    negatives: str = "batch",
    key: jax.Array | None = None,
    axis_name: _core.AxisName | None = None,
    chunk_size: int | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """OVA-IB: ``L = L_S + beta * L_M`` (SPEC sections 1-2; beta = 1 in the paper, 0.5 on
    WESAD). See :func:`ova_sufficiency` and :func:`ova_minimality` for the terms, the
    arguments and the decisions. ``beta = 0`` is the paper's "no minimality" ablation;
    beta must be finite and >= 0 (may be traced).

    Returns:
      ``(loss, aux)`` with every entry of both terms' aux.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from ovaib_jax import losses
      >>> z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))  # aligned
      >>> loss, aux = losses.ova_ib(z, tau=0.1, beta=1.0)
      >>> float(aux["accuracy"]), bool(loss > aux["sufficiency"])  # + beta * minimality
      (1.0, True)
    """
    name = "ova_ib"
    _core.check_hyperparameter(tau, "tau", name, "positive")
    _core.check_hyperparameter(beta, "beta", name, "non_negative")
    _core.check_hyperparameter(lam, "lam", name, "positive")
    _core.check_hyperparameter(product_weight, "product_weight", name, "non_negative")
    z = _check_sufficiency_args(
        z, tau, lam, exclude_positive, projector, product_weight, negatives, axis_name, chunk_size
    )
    zs = _modalities(z)
    queries = [_core.l2_normalize(x) for x in zs]  # shared by both terms
    loss_s, aux = _sufficiency(
        z,
        queries,
        tau=tau,
        lam=lam,
        exclude_positive=exclude_positive,
        projector=projector,
        product_weight=_weight(product_weight),
        negatives=negatives,
        key=key,
        axis_name=axis_name,
        chunk_size=chunk_size,
    )
    # The regulariser is O(M N d): always computed, so that it is logged with beta = 0 too.
    loss_m, aux_m = _minimality(queries if normalize_minimality else zs, axis_name)
    aux.update(aux_m)
    return loss_s + beta * loss_m, aux
