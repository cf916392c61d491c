"""The shared leave-one-out bases of OVA-IB (``_basis.leave_one_out_bases``): the same
values as one guarded Gram-Schmidt per leave-one-out set, its hand-written VJP against
automatic differentiation of that per-set computation (inputs, ``lam``, inside
``shard_map``), and the float32 accuracy of the scores on nearly collinear spans against
a float64 literal guarded Gram-Schmidt. The bases written as combinations of the inputs
(``_basis.gram_schmidt_with_coefficients``, OVA-IB's two-halves path): they rebuild the
basis, and the path's scores keep the same accuracy."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import losses
from ovaib_jax.losses import _basis, ova
from ovaib_jax.losses._basis import (
    guarded_gram_schmidt,
    leave_one_out_bases,
    span_basis,
)
from ovaib_jax.losses._core import l2_normalize


def _units(z):
    return [l2_normalize(x[0]) for x in jnp.split(z, z.shape[0])]


def _per_set(vectors, lam):
    """One guarded Gram-Schmidt per leave-one-out set (the computation the shared pass
    replaces), differentiated automatically."""
    m_count = len(vectors)
    return [
        jnp.stack(guarded_gram_schmidt([v for k, v in enumerate(vectors) if k != m], lam)[0])
        for m in range(m_count)
    ]


def _inputs(m, n=6, d=5, degenerate=False, seed=0):
    z = jax.random.normal(jax.random.key(seed + m), (m, n, d))
    if degenerate:  # a duplicated modality for two samples, a zero embedding
        z = z.at[min(2, m - 1), :2].set(z[0, :2]).at[m - 1, 3].set(0.0)
    return z


@pytest.mark.parametrize("m", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("lam", [1e-8, 0.5])
def test_values_are_those_of_one_gram_schmidt_per_set(m, lam):
    """Same operations in the same order as span_basis of each set: equal up to float32
    rounding (XLA may fuse them differently)."""
    z = _inputs(m, d=16)
    shared = jax.jit(lambda z: leave_one_out_bases(_units(z), lam))(z)
    for k, basis in enumerate(shared):
        rest = jnp.stack([u for j, u in enumerate(_units(z)) if j != k], axis=1)
        expected = jax.jit(lambda a: span_basis(a, lam, normalized=True)[0])(rest)
        assert basis.shape == (m - 1, z.shape[1], z.shape[2])
        np.testing.assert_allclose(
            np.asarray(jnp.moveaxis(basis, 0, 1)), expected, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("m", [3, 4, 8])
def test_degenerate_spans_project_like_one_gram_schmidt_per_set(m):
    """Duplicated and zero embeddings, and more modalities than dimensions (d = 5 < M at
    M = 8): the guarded directions of rank-deficient sets are rounding noise shrunk by
    the guard, so compare what the loss sees, the squared projections of unit queries."""
    z = _inputs(m, degenerate=True)
    queries = l2_normalize(jax.random.normal(jax.random.key(7), (4, z.shape[2])))
    shared = jax.jit(lambda z: leave_one_out_bases(_units(z), 1e-8))(z)
    per_set = jax.jit(lambda z: _per_set(_units(z), 1e-8))(z)
    for got, want in zip(shared, per_set):
        sq = [jnp.sum(jnp.square(jnp.einsum("qd,kcd->qkc", queries, b)), 1) for b in (got, want)]
        np.testing.assert_allclose(np.asarray(sq[0]), np.asarray(sq[1]), atol=1e-5)


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize("degenerate", [False, True])
@pytest.mark.parametrize("lam", [1e-8, 0.5])
def test_vjp_matches_automatic_differentiation(m, degenerate, lam):
    """Gradients with respect to the embeddings and to lam, against autodiff of the
    per-set Gram-Schmidt (degenerate spans give gradients of ~1e16: relative check)."""
    z = _inputs(m, n=6, d=16, degenerate=degenerate, seed=3)
    w = jax.random.normal(jax.random.key(9), (m, m - 1, 6, 16))

    def loss(bases_fn, z, lam):
        return sum(jnp.sum(b * w[k]) for k, b in enumerate(bases_fn(_units(z), lam)))

    got = jax.jit(jax.grad(functools.partial(loss, leave_one_out_bases), argnums=(0, 1)))(z, lam)
    want = jax.jit(jax.grad(functools.partial(loss, _per_set), argnums=(0, 1)))(z, lam)
    assert np.all(np.isfinite(np.asarray(got[0])))
    scale = float(jnp.max(jnp.abs(want[0])))
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-5 * scale)
    np.testing.assert_allclose(float(got[1]), float(want[1]), rtol=1e-4)


@pytest.mark.parametrize("degenerate", [False, True])
def test_a_subset_of_sets_is_what_all_sets_give_and_costs_its_own_gram_schmidt(degenerate):
    """``sets=``: the bases and the gradients of the chosen sets, in the order asked,
    are those of the call that builds all M (the same operations: equal to the bit); and
    the pruned tape does only what they need: one set costs exactly the C(M-1, 2)
    projections and M-1 normalisations of its own Gram-Schmidt, whichever set it is."""
    m, lam = 5, 0.5
    z = _inputs(m, n=6, d=16, degenerate=degenerate, seed=4)
    w = jax.random.normal(jax.random.key(2), (2, m - 1, 6, 16))
    sets = (3, 0)

    def loss(z, lam, subset):
        bases = leave_one_out_bases(_units(z), lam, sets=sets if subset else None)
        chosen = bases if subset else [bases[k] for k in sets]
        return sum(jnp.sum(b * w[i]) for i, b in enumerate(chosen)), chosen

    grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
    (got_dz, got_dlam), got = grad(z, lam, True)
    (want_dz, want_dlam), want = grad(z, lam, False)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(got_dz), np.asarray(want_dz), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(got_dlam), float(want_dlam), rtol=1e-6)
    for k in range(m):
        ops = _basis._loo_tape(m, (k,))[0]
        assert sum(op[0] == "proj" for op in ops) == (m - 1) * (m - 2) // 2, k
        assert sum(op[0] == "unit" for op in ops) == m - 1, k
    # All sets: the shared pass (C(M-1, 2) projections for the prefix, M - 2 for the last
    # vector's residuals, M - 1 units), then set m's tail (C(M-m-1, 2) projections, M-1-m
    # units): C(M, 2) + C(M, 3) - 1 projections and M - 1 + C(M, 2) units in all.
    ops = _basis._loo_tape(m)[0]
    assert sum(op[0] == "proj" for op in ops) == math.comb(m, 2) + math.comb(m, 3) - 1
    assert sum(op[0] == "unit" for op in ops) == m - 1 + math.comb(m, 2)
    with pytest.raises(ValueError, match=r"sets \(5,\) must be indices in \[0, 5\)"):
        leave_one_out_bases(_units(z), lam, sets=[5])


def _two_whole_passes(q, lam):
    """span_order's bases from two passes that each build all M leave-one-out bases."""
    rows = ova._rows_half(len(q))
    perm = [i for i in range(len(q)) if i not in rows] + rows
    natural = leave_one_out_bases(q, lam)
    rotated = leave_one_out_bases([q[i] for i in perm], lam)
    return [rotated[perm.index(k)] if k in rows else natural[k] for k in range(len(q))]


def _bases_and_grad_memory(fn, z):
    """(fn's bases of z's unit vectors, compiled temporary bytes of a gradient through them)."""
    bases = jax.jit(lambda z: jnp.stack(fn(_units(z), 1e-8)))(z)
    grad = jax.jit(jax.grad(lambda z: sum(jnp.sum(b**3) for b in fn(_units(z), 1e-8))))
    return np.asarray(bases), grad.lower(z).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("m", [3, 4, 8])
def test_span_order_bases_build_only_their_halves(m):
    """OVA-IB's stacked path (sharded, chunked) builds each modality's basis in
    span_order from two passes; each pass builds only its half's bases: the same values
    as two whole passes, in less compiled memory for the gradient (two whole passes took
    1.19x to 1.57x the memory at M = 3 to 8 and did the other half's bases for nothing)."""
    z = _inputs(m, n=64, d=32)
    want, whole = _bases_and_grad_memory(_two_whole_passes, z)
    got, halves = _bases_and_grad_memory(ova._span_order_bases, z)
    np.testing.assert_array_equal(got, want)
    assert halves < whole / 1.15, (halves, whole)


def test_lam_gradient_inside_shard_map():
    """A replicated (traced) lam inside shard_map: its gradient sums every device's part,
    as in the unsharded loss; the embeddings' gradient matches too."""
    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices (XLA_FLAGS set in tests/conftest.py)")
    mesh = jax.sharding.Mesh(np.array(devices[:4]), ("data",))
    z = jax.random.normal(jax.random.key(1), (3, 8, 6))
    lam = jnp.float32(0.3)
    plain = jax.grad(lambda z, lam: losses.ova_ib(z, tau=0.1, lam=lam)[0], argnums=(0, 1))
    sharded = jax.shard_map(
        lambda z, lam: losses.ova_ib(z, tau=0.1, lam=lam, axis_name="data")[0],
        mesh=mesh,
        in_specs=(P(None, "data"), P()),
        out_specs=P(),
    )
    z_sharded = jax.device_put(z, NamedSharding(mesh, P(None, "data")))
    got = jax.jit(jax.grad(sharded, argnums=(0, 1)))(z_sharded, lam)
    want = jax.jit(plain)(z, lam)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(got[1]), float(want[1]), rtol=1e-5)


def _guarded_scores64(u, lam, order=None):
    """float64 literal guarded Gram-Schmidt (``span_basis``'s docstring) of every
    leave-one-out set, and the squared scores ``||Q_{-m, j} u_{m, i}||^2``: (M, N, N).
    ``order(m)``: the remaining modalities in the order they are orthogonalised
    (default: modality order)."""
    m_count, n, _ = u.shape
    out = np.zeros((m_count, n, n))
    for m in range(m_count):
        rest = u[order(m)] if order else np.delete(u, m, axis=0)
        for j in range(n):
            qs = []
            for a in rest[:, j]:
                v = a.copy()
                for q in qs:
                    v = v - (q @ v) * q
                qs.append(v / np.sqrt(v @ v + lam))
            out[m, :, j] = np.sum((u[m] @ np.stack(qs).T) ** 2, axis=-1)
    return out


@pytest.mark.parametrize("sigma", [1e-2, 1e-3])
def test_nearly_collinear_spans_keep_float32_accuracy(sigma):
    """Modalities within ~sigma radians of each other: the remaining spans are nearly
    degenerate (residuals r ~ sigma^2 >> lam). Gram-Schmidt on the vectors keeps the
    squared scores within ~1e-7 / sigma of the float64 values; a basis derived from the
    small Gram matrices would lose ~1e-7 / sigma^2 (8e-4 at sigma = 1e-2, 9e-2 at 1e-3,
    measured while choosing the algorithm)."""
    m, n, d = 4, 12, 32
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, n, d)) + sigma * rng.normal(size=(m, n, d))
    u64 = z / np.linalg.norm(z, axis=-1, keepdims=True)
    u = jnp.asarray(u64, jnp.float32)
    bases = leave_one_out_bases(list(u), 1e-8)
    proj = [jnp.einsum("nd,kcd->nkc", u[k], b) for k, b in enumerate(bases)]
    got = np.stack([jnp.sum(jnp.square(p), axis=1) for p in proj])
    np.testing.assert_allclose(got, _guarded_scores64(u64, 1e-8), atol=3e-6 / sigma)


@pytest.mark.parametrize(
    "k, degenerate, lam", [(1, False, 0.5), (2, False, 1e-8), (4, True, 1e-8), (5, False, 0.5)]
)
def test_coefficients_rebuild_the_basis_and_the_pass_continues(k, degenerate, lam):
    """``gram_schmidt_with_coefficients`` of the first k vectors: its basis is
    ``guarded_gram_schmidt``'s, and each basis vector is the triangular combination of the
    inputs that its coefficients say (to the rounding of the combination: a duplicated
    input's dropped direction has coefficients ~1 / sqrt(lam)); ``continue_gram_schmidt``
    after it gives the rest of ``guarded_gram_schmidt`` of all the vectors."""
    u = _units(_inputs(k + 2, d=16, degenerate=degenerate, seed=5))
    qs, coefs = jax.jit(lambda u: _basis.gram_schmidt_with_coefficients(u[:k], lam))(u)
    rest = jax.jit(lambda q, u: _basis.continue_gram_schmidt(q, u[k:], lam))(qs, u)
    want = guarded_gram_schmidt(u, lam)[0]
    assert [len(c) for c in coefs] == list(range(1, k + 1))  # triangular
    for q, c, w in zip(qs, coefs, want[:k]):
        np.testing.assert_allclose(np.asarray(q), np.asarray(w), atol=1e-6)
        combined = sum(ci[:, None] * u[i] for i, ci in enumerate(c))
        # float32 rounding of the combination: ~1e-7 sum |c_i|, with c_i up to
        # 1 / sqrt(lam) for a direction the guard drops (a duplicated input)
        bound = 2e-6 * (1.0 + float(sum(jnp.max(jnp.abs(ci)) for ci in c)))
        np.testing.assert_allclose(np.asarray(combined), np.asarray(w), atol=bound)
    for got, w in zip(rest, want[k:]):
        np.testing.assert_allclose(np.asarray(got), np.asarray(w), atol=1e-6)


@pytest.mark.parametrize("sigma", [1e-2, 1e-3])
def test_nearly_collinear_scores_of_the_two_halves(sigma):
    """The two-halves path's scores (OVA-IB on one device): projections on the other
    half's basis as combinations of the dot products U_m U_l^T with the coefficients,
    plus the own half's basis vectors met directly, keep the float32 accuracy of the
    bases on nearly collinear spans (the tolerance of
    ``test_nearly_collinear_spans_keep_float32_accuracy``), against the float64 literal
    guarded Gram-Schmidt in the path's order (``ova.span_order``)."""
    m, n, d = 5, 12, 32
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, n, d)) + sigma * rng.normal(size=(m, n, d))
    u64 = z / np.linalg.norm(z, axis=-1, keepdims=True)
    u = list(jnp.asarray(u64, jnp.float32))
    rows = ova._rows_half(m)
    got = []
    for k in range(m):
        order = ova.span_order(k, m)
        other = [i for i in order if (i in rows) != (k in rows)]
        qs, coefs = _basis.gram_schmidt_with_coefficients([u[i] for i in other], 1e-8)
        own = _basis.continue_gram_schmidt(qs, [u[i] for i in order[len(other) :]], 1e-8)
        dots = [u[k] @ u[i].T for i in other]
        proj = [sum(c[None, :] * dots[i] for i, c in enumerate(row)) for row in coefs]
        proj += [u[k] @ q.T for q in own]
        got.append(sum(jnp.square(p) for p in proj))
    want = _guarded_scores64(u64, 1e-8, order=lambda k: ova.span_order(k, m))
    np.testing.assert_allclose(np.stack(got), want, atol=3e-6 / sigma)
