"""The shared leave-one-out bases of OVA-IB (``_basis.leave_one_out_bases``): the same
values as one guarded Gram-Schmidt per leave-one-out set, its hand-written VJP against
automatic differentiation of that per-set computation (inputs, ``lam``, inside
``shard_map``), and the float32 accuracy of the scores on nearly collinear spans against
a float64 literal guarded Gram-Schmidt. The same for the bases written as combinations of
the inputs (``_basis.leave_one_out_coefficients``, OVA-IB's shared-pair path)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import losses
from ovaib_jax.losses import _basis
from ovaib_jax.losses._basis import (
    guarded_gram_schmidt,
    leave_one_out_bases,
    leave_one_out_coefficients,
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


def _guarded_scores64(u, lam):
    """float64 literal guarded Gram-Schmidt (``span_basis``'s docstring) of every
    leave-one-out set, and the squared scores ``||Q_{-m, j} u_{m, i}||^2``: (M, N, N)."""
    m_count, n, _ = u.shape
    out = np.zeros((m_count, n, n))
    for m in range(m_count):
        rest = np.delete(u, m, axis=0)
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


def _combined(coefs, vectors):
    """Basis vectors (M lists of M-1 arrays (N, d)) from their coefficients."""
    m_count = len(vectors)
    out = []
    for m in range(m_count):
        others = [k for k in range(m_count) if k != m]
        out.append(
            [sum(c[:, None] * vectors[others[i]] for i, c in enumerate(row)) for row in coefs[m]]
        )
    return out


@pytest.mark.parametrize("m, lam", [(2, 0.5), (3, 1e-8), (4, 0.5), (6, 1e-8)])
def test_coefficients_rebuild_the_bases(m, lam):
    """Each basis vector of every leave-one-out set is the combination of the set's
    inputs (in order, triangular) that the coefficients say."""
    z = _inputs(m, n=6, d=16, seed=5)
    u = _units(z)
    coefs = jax.jit(lambda z: leave_one_out_coefficients(_units(z), lam))(z)
    bases = jax.jit(lambda z: leave_one_out_bases(_units(z), lam))(z)
    assert [len(row) for row in coefs[0]] == list(range(1, m))  # triangular
    for got, want in zip(_combined(coefs, u), bases):
        np.testing.assert_allclose(np.stack(got), np.asarray(want), atol=2e-6)


@pytest.mark.parametrize(
    "m, degenerate, lam", [(2, False, 0.5), (3, True, 1e-8), (4, False, 0.5), (4, True, 1e-8)]
)
def test_coefficients_vjp_matches_automatic_differentiation(m, degenerate, lam):
    """The hand-written VJP of the Gram-Schmidt scalars (``_loo_factors``) against
    automatic differentiation of the same forward pass, for the embeddings and lam."""
    z = _inputs(m, n=6, d=16, degenerate=degenerate, seed=3)
    n_ops = len(_basis._loo_tape(m)[0])
    w = jax.random.normal(jax.random.key(9), (n_ops, 6))

    def loss(factors_fn, z, lam):
        factors = factors_fn(tuple(_units(z)), jnp.asarray(lam, jnp.float32))
        return sum(jnp.sum(jnp.sin(f) * w[i]) for i, f in enumerate(factors))

    got = jax.jit(jax.grad(functools.partial(loss, _basis._loo_factors), (0, 1)))(z, lam)
    want = jax.jit(
        jax.grad(functools.partial(loss, lambda v, lam: _basis._loo_scalars(v, lam)[1]), (0, 1))
    )(z, lam)
    assert np.all(np.isfinite(np.asarray(got[0])))
    # (At M = 2 every scalar is |u|^-1 of a unit vector: its gradient is rounding noise.)
    scale = max(float(jnp.max(jnp.abs(want[0]))), 1e-2)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-5 * scale)
    np.testing.assert_allclose(float(got[1]), float(want[1]), rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize("sigma", [1e-2, 1e-3])
def test_nearly_collinear_scores_from_pair_dot_products(sigma):
    """The shared-pair path's scores, combinations of the dot products U_m U_l^T with the
    coefficients, keep the float32 accuracy of the bases on nearly collinear spans (the
    same tolerance as ``test_nearly_collinear_spans_keep_float32_accuracy``)."""
    m, n, d = 4, 12, 32
    rng = np.random.default_rng(0)
    z = rng.normal(size=(1, n, d)) + sigma * rng.normal(size=(m, n, d))
    u64 = z / np.linalg.norm(z, axis=-1, keepdims=True)
    u = list(jnp.asarray(u64, jnp.float32))
    coefs = leave_one_out_coefficients(u, 1e-8)
    got = []
    for k in range(m):
        dots = [u[k] @ u[l].T for l in range(m) if l != k]
        proj = [sum(c[None, :] * dots[i] for i, c in enumerate(row)) for row in coefs[k]]
        got.append(sum(jnp.square(p) for p in proj))
    np.testing.assert_allclose(np.stack(got), _guarded_scores64(u64, 1e-8), atol=3e-6 / sigma)
