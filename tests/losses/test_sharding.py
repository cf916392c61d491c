"""Sharded objectives (inside ``jax.shard_map`` over 8 fake CPU devices) equal the
unsharded ones, in value, aux and gradient with respect to every shard."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import losses

N_DEV = 8

CASES = {
    "ova_ib": {"tau": 0.1, "beta": 0.5},
    "ova_ib_excl": {"tau": 0.1, "exclude_positive": True},
    "ova_sufficiency": {"tau": 0.1},
    "ova_sufficiency_shuffled": {"tau": 0.1, "negatives": "shuffled", "key": "KEY"},
    "ova_ib_product": {"tau": 0.1, "product_weight": 0.5},
    "pairwise_clip": {"tau": 0.1},
    "pairwise_clip_ib": {"tau": 0.1, "beta": 0.5},
    "anchor_clip": {"tau": 0.1, "anchor": 2},
    "symile": {"logit_scale": 2.0},
    "symile_key": {"logit_scale": 2.0, "key": "KEY"},
    "symile_n_squared": {"logit_scale": 2.0, "negatives": "n_squared"},
    "gram": {"tau": 0.1},
    "triangle": {"tau": 0.1, "anchor": 1},
}


def _objective(case):
    for suffix in ("_excl", "_key", "_n_squared", "_shuffled", "_product"):
        case = case.removesuffix(suffix)
    return losses.get(case)


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < N_DEV:
        pytest.skip(f"needs {N_DEV} devices (XLA_FLAGS set in tests/conftest.py)")
    return jax.sharding.Mesh(np.array(jax.devices()[:N_DEV]), ("data",))


def _sharded(fn, mesh, **kwargs):
    """``fn`` under shard_map with z sharded along its batch axis (axis 1)."""

    def local(z):
        return fn(z, axis_name="data", **kwargs)

    return jax.shard_map(local, mesh=mesh, in_specs=P(None, "data"), out_specs=P())


@pytest.mark.parametrize("case", list(CASES))
def test_sharded_equals_unsharded(mesh, case):
    """Sharded over the mesh, whole or in chunks of 3 candidates: the unsharded value,
    aux and gradient (computed once for both)."""
    m = 3
    n = 2 * N_DEV if case != "symile_n_squared" else N_DEV  # N^2 candidates for n_squared
    z = jax.random.normal(jax.random.key(1), (m, n, 6))
    kwargs = dict(CASES[case])
    if kwargs.get("key") == "KEY":
        kwargs["key"] = jax.random.key(5)
    fn = _objective(case)
    plain = jax.jit(jax.value_and_grad(lambda z: fn(z, **kwargs), has_aux=True))
    (loss, aux), grad = plain(z)
    z_sharded = jax.device_put(z, NamedSharding(mesh, P(None, "data")))
    for chunk in (None, 3):
        sharded_fn = _sharded(functools.partial(fn, chunk_size=chunk), mesh, **kwargs)
        (loss_s, aux_s), grad_s = jax.jit(jax.value_and_grad(sharded_fn, has_aux=True))(z_sharded)
        msg = f"chunk_size={chunk}"
        np.testing.assert_allclose(float(loss_s), float(loss), rtol=1e-5, atol=1e-6, err_msg=msg)
        np.testing.assert_allclose(
            np.asarray(grad_s), np.asarray(grad), rtol=1e-4, atol=1e-6, err_msg=msg
        )
        assert aux_s.keys() == aux.keys(), msg
        for k in aux:
            np.testing.assert_allclose(
                float(aux_s[k]), float(aux[k]), rtol=1e-5, atol=1e-6, err_msg=f"{msg}: {k}"
            )


def test_sharded_without_replication_check(mesh):
    """Also correct when the caller disables shard_map's replication checking."""
    z = jax.random.normal(jax.random.key(2), (3, N_DEV, 5))
    f = jax.shard_map(
        lambda z: losses.ova_ib(z, tau=0.1, axis_name="data"),
        mesh=mesh,
        in_specs=P(None, "data"),
        out_specs=P(),
        check_vma=False,
    )
    g_s = jax.jit(jax.grad(lambda z: f(z)[0]))(z)
    g = jax.jit(jax.grad(lambda z: losses.ova_ib(z, tau=0.1)[0]))(z)
    np.testing.assert_allclose(np.asarray(g_s), np.asarray(g), rtol=1e-4, atol=1e-6)


def test_each_device_scores_only_its_own_rows(mesh):
    """Per-device memory: the compiled sharded forward+backward holds an
    (N/devices x N) block, not the full N x N matrix."""
    n, d = 1024, 16
    spec = jax.ShapeDtypeStruct((3, n, d), jnp.float32)

    def temp(fn):
        return jax.jit(fn).lower(spec).compile().memory_analysis().temp_size_in_bytes

    plain = temp(jax.grad(lambda z: losses.pairwise_clip(z)[0]))
    sharded = temp(jax.grad(lambda z: _sharded(losses.pairwise_clip, mesh)(z)[0]))
    assert plain >= n * n * 4
    assert sharded < plain / 4
