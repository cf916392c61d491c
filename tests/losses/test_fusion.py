"""The fusion objectives (ConFu, CoMM) against their literal NumPy references (values,
every aux entry, gradients), the chunked form sharded over devices against the plain
one, their retrieval scores, the tables that state what they take from the model, and
the model's fusion modules and their wiring into the run's objective."""

from __future__ import annotations

import doctest
import functools
import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ovaib_jax import configs, losses, objective, runtime, validation
from ovaib_jax.losses import fusion
from ovaib_jax.models.heads import MaskedFusion
from tests.losses import reference_fusion as ref

TAU = 0.1
N_DEV = 8


def _z(m, n=5, d=3, seed=0):
    return jax.random.normal(jax.random.key(seed), (m, n, d), jnp.float32)


def _pair_heads(m_count, d, seed=0):
    """A parametric ConFu fusion, ``projector(rest, m) = tanh(concat(rest) @ W_m)``, as a
    (JAX, NumPy) pair of twins."""
    w = np.random.default_rng(seed).normal(size=(m_count, (m_count - 1) * d, d))
    w /= math.sqrt((m_count - 1) * d)

    def build(xp):
        return lambda rest, m: xp.tanh(xp.concatenate(list(rest), axis=-1) @ w[m])

    return build(jnp), build(np)


def _masked_mlp(m_count, d, width, seed=0):
    """A parametric CoMM fusion on the zero-filled slots and the mask indicators,
    ``tanh([slots, visible] @ W)`` of width ``width``, as (JAX, NumPy) twins."""
    w = np.random.default_rng(seed).normal(size=(m_count * d + m_count, width))
    w /= math.sqrt(m_count * d)

    def build(xp):
        def fuse(parts, subset):
            _, n, _ = parts.shape
            slots = [xp.zeros((n, d), parts.dtype)] * m_count
            for j, m in enumerate(subset):
                slots[m] = parts[j]
            visible = xp.asarray([float(m in subset) for m in range(m_count)], parts.dtype)
            x = xp.concatenate([*slots, xp.broadcast_to(visible, (n, m_count))], axis=-1)
            return xp.tanh(x @ w)

        return fuse

    return build(jnp), build(np)


def _case(name, fusion_kind, m, d):
    """(library objective with its kwargs, reference of z) for one case."""
    if name == "confu":
        lib, npy = _pair_heads(m, d) if fusion_kind == "learned" else (None, None)
        kw = {"tau": TAU, "fusion_weight": 0.3, "projector": lib}
        return functools.partial(losses.confu, **kw), lambda z: ref.confu(z, TAU, 0.3, npy)
    lib, npy = _masked_mlp(m, d, width=4) if fusion_kind == "learned" else (None, None)
    if name == "ova_ib_comm":  # every hyper-parameter of its own away from its default
        kw = dict(tau=TAU, beta=0.5, product_weight=0.7, comm_weight=0.6, comm_tau=0.2)
        return (
            functools.partial(losses.ova_ib_comm, fuse=lib, **kw),
            lambda z: ref.ova_ib_comm(z, fuse=npy, **kw),
        )
    if name == "ova_ib_heads":  # every hyper-parameter of its own away from its default
        kw = dict(tau=TAU, beta=0.5, product_share=0.3, product_weight=0.7, comm_share=0.2,
                  comm_weight=0.6, comm_tau=0.2)  # fmt: skip
        return (
            functools.partial(losses.ova_ib_heads, fuse=lib, **kw),
            lambda z: ref.ova_ib_heads(z, fuse=npy, **kw),
        )
    return functools.partial(losses.comm, tau=TAU, fuse=lib), lambda z: ref.comm(z, TAU, npy)


OBJECTIVES = ("confu", "comm", "ova_ib_comm", "ova_ib_heads")


def _width(name):
    """The embedding width of the value tests: 8 for the heads (4 + 2 + 2 dimensions at
    the shares of ``_case``), else 3."""
    return 8 if name == "ova_ib_heads" else 3


@pytest.mark.parametrize("name", OBJECTIVES)
def test_default_fusion_values_match_literal_reference(name):
    """The loss and EVERY aux entry (the keys too) with the parameter-free fusion, M = 2
    and 4 (M = 3 below, with a learned fusion)."""
    for m in (2, 4):
        z = _z(m, d=_width(name), seed=m)
        fn, reference = _case(name, "default", m, z.shape[2])
        chex.assert_trees_all_close(
            jax.jit(fn)(z), reference(np.asarray(z)), rtol=2e-5, atol=2e-5,
            custom_message=f"{name}, M = {m}",
        )  # fmt: skip


def _assert_directional_derivatives(f, x, grad, directions=6, eps=1e-5):
    """``grad . v`` against the central difference of ``f`` (float64) along random unit
    directions ``v`` (as ``jax.test_util.check_grads`` does): a wrong gradient entry
    changes almost every directional derivative, for 2 evaluations each instead of 2 per
    coordinate."""
    x = np.asarray(x, np.float64)
    grad = np.asarray(grad, np.float64)
    rng = np.random.default_rng(0)
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        v /= np.linalg.norm(v)
        want = (f(x + eps * v) - f(x - eps * v)) / (2 * eps)
        # (Observed: within 6e-7 of each other. An error e in one of the n entries moves
        # a derivative by e v_i, |v_i| ~ n^-1/2, so the tolerance is the per-entry one,
        # 2e-4, over 20: an entry off by ~1e-4 fails.)
        np.testing.assert_allclose(np.sum(grad * v), want, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < N_DEV:
        pytest.skip(f"needs {N_DEV} devices (XLA_FLAGS set in tests/conftest.py)")
    return jax.sharding.Mesh(np.array(jax.devices()[: N_DEV // 2]), ("data",))


@pytest.mark.parametrize("name", OBJECTIVES)
def test_value_gradient_and_chunked_sharded_form(name, mesh):
    """With a learned (parametric) fusion, M = 3, N = 8: the loss and every aux entry
    against the literal reference, the gradient (through the embeddings and the fusion
    of them) against its finite differences along random directions; blocks of 3
    candidates (the last one shifted back) inside ``jax.shard_map`` over 4 fake CPU
    devices (the fusion applied to each device's rows) give the same loss, aux and
    gradient. (The chunked form on one device is not compiled again here: it is the
    same block code with no axis, which tests/losses/test_objectives.py checks against
    the plain form for every base objective; it took half of this test's time.)"""
    z = _z(3, n=8, d=_width(name), seed=11)
    fn, reference = _case(name, "learned", 3, _width(name))
    (loss, aux), grad = jax.jit(jax.value_and_grad(fn, has_aux=True))(z)
    chex.assert_trees_all_close((loss, aux), reference(np.asarray(z)), rtol=2e-5, atol=2e-5)
    _assert_directional_derivatives(lambda z: reference(z)[0], z, grad)

    sharded = jax.shard_map(
        lambda z: fn(z, axis_name="data", chunk_size=3),
        mesh=mesh,
        in_specs=P(None, "data"),
        out_specs=P(),
    )
    z_sharded = jax.device_put(z, NamedSharding(mesh, P(None, "data")))
    (loss_s, aux_s), grad_s = jax.jit(jax.value_and_grad(sharded, has_aux=True))(z_sharded)
    assert aux_s.keys() == aux.keys()
    chex.assert_trees_all_close((loss_s, aux_s), (loss, aux), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grad_s), np.asarray(grad), rtol=1e-4, atol=1e-6)


def test_degenerate_inputs_and_uninformative_scores():
    """Zero, collinear and all-equal embeddings: finite values and gradients; with every
    score tied, ConFu is log N (each group a mean of InfoNCE terms), CoMM is log(2N - 1)
    (NT-Xent's 2N - 1 candidates), every accuracy 0 (a tie is an error)."""
    base = np.asarray(_z(3, n=6, d=5))
    inputs = {
        "zero": np.stack([base[0], 0.0 * base[1], base[2]]),
        "collinear": np.stack([base[0], base[1], -3.0 * base[1]]),
        "all_equal": np.broadcast_to(base[0, 0], base.shape).copy(),
    }
    # OVA-IB + CoMM at its defaults: OVA's log N (no minimality: all equal) + CoMM's
    # OVA-IB on heads at its defaults: the span and product heads' log N + CoMM's
    wants = (math.log(6), math.log(11), math.log(6) + math.log(11), 2 * math.log(6) + math.log(11))
    for name, want in zip(OBJECTIVES, wants, strict=True):
        value_and_grad = jax.jit(jax.value_and_grad(losses.get(name), has_aux=True))
        for label, z in inputs.items():
            (loss, aux), grad = value_and_grad(jnp.asarray(z))
            assert np.all(np.isfinite(np.asarray(grad))), (name, label)
            chex.assert_tree_all_finite((loss, aux))
            if label == "all_equal":  # (ova_ib_comm: OVA's and CoMM's comm/accuracy*)
                accuracies = {k: v for k, v in aux.items() if "accuracy" in k}
                chex.assert_trees_all_close(
                    (loss, accuracies), (want, {k: 0.0 for k in accuracies}), atol=1e-5
                )


def test_bad_arguments():
    z = _z(3)
    with pytest.raises(ValueError, match="fusion_weight"):
        losses.confu(z, fusion_weight=1.5)
    with pytest.raises(ValueError, match=r"projector\(rest, m\) must return shape \(5, 3\)"):
        losses.confu(z, projector=lambda rest, m: rest[0, :, :2])
    with pytest.raises(ValueError, match=r"fuse\(z\[0\], \(0,\)\) must return shape \(5, 2\)"):
        losses.comm(z, fuse=lambda parts, s: parts[0, :, :2] if len(s) > 1 else parts[0])
    with pytest.raises(ValueError, match=r"M = 1"):
        losses.comm(jnp.zeros((1, 4, 3)))


def test_tables_state_what_each_objective_takes_from_the_model():
    for name in losses.names():
        params = inspect.signature(losses.get(name)).parameters
        assert ("fuse" in params) == (name in losses.TAKES_FUSE), name
        if name in losses.LEARNED_PROJECTOR:
            assert "projector" in params, name
    assert losses.TEMPERATURE["confu"] == losses.TEMPERATURE["comm"] == "tau"
    assert losses.get_scorer("confu") is losses.get_scorer("comm") is losses.clip_score
    # OVA-IB + CoMM trains with the fusion but retrieves with OVA's score
    assert losses.FUSION_SCORED <= losses.TAKES_FUSE and "ova_ib_comm" not in losses.FUSION_SCORED
    assert losses.get_scorer("ova_ib_comm") is losses.ova_score
    assert "ova_ib_heads" not in losses.FUSION_SCORED
    assert losses.get_scorer("ova_ib_heads") is losses.ova_heads_score


def test_run_info_hands_the_fusion_only_to_fusion_scored_objectives():
    """CoMM's evaluators score with its fusion; OVA-IB + CoMM's with OVA's score (and its
    shared hyper-parameters), though its objective still gets the fusion."""
    shared = {
        "comm": set(),
        "ova_ib_comm": {"lam", "product_weight"},
        "ova_ib_heads": {"lam", "product_share", "product_weight", "comm_share"},
    }
    for name, want in shared.items():
        config, resolved, model, variables = _run(name, fusion=True)
        info = objective.run_info(config, resolved, model, variables)
        assert (info.fuse is not None) == (name == "comm"), name
        assert "fuse" in info.loss_kwargs, name
        assert set(info.scorer_kwargs) == want, name


def test_heads_split_the_width_and_each_term_sees_only_its_own():
    """``head_sizes`` by hand; moving one head's dimensions changes only that head's
    terms (the others' aux entries stay exactly equal), and the gradient of each term
    is zero outside its head."""
    assert losses.head_sizes(32, 0.25, 0.25) == (16, 8, 8)
    assert losses.head_sizes(5, 0.25, 0.25) == (3, 1, 1)  # a share > 0 keeps >= 1 dimension
    assert losses.head_sizes(10, 0.0, 0.35) == (6, 0, 4)
    with pytest.raises(ValueError, match="no dimension of d = 2 to the span head"):
        losses.head_sizes(2, 0.25, 0.25)
    fn = jax.jit(functools.partial(losses.ova_ib_heads, tau=TAU, beta=0.5))
    z = _z(3, n=6, d=8, seed=3)
    heads = {"span": slice(0, 4), "product": slice(4, 6), "comm": slice(6, 8)}

    def term_of(key):
        if key.startswith("product"):
            return "product"
        return "comm" if key.startswith("comm") else "span"

    _, aux = fn(z)
    loss_key = {"span": "ova_ib", "product": "product", "comm": "comm"}
    for head, dims in heads.items():
        moved = z.at[..., dims].multiply(-1.5).at[0, :, dims].add(0.7)
        _, aux_moved = fn(moved)
        assert aux_moved[loss_key[head]] != aux[loss_key[head]], head
        for key, value in aux.items():
            if term_of(key) != head:
                assert value == aux_moved[key], (head, key)
    weights = {"span": (1.0, 0.0, 0.0), "product": (0.0, 1.0, 0.0), "comm": (0.0, 0.0, 1.0)}
    for head, (w_span, w_prod, w_comm) in weights.items():
        grad = jax.grad(
            lambda z, w_prod=w_prod, w_comm=w_comm, w_span=w_span: (
                w_span * fn(z)[1]["ova_ib"]
                + w_prod * fn(z)[1]["product"]
                + w_comm * fn(z)[1]["comm"]
            )
        )(z)
        outside = np.delete(np.asarray(grad), np.arange(8)[heads[head]], axis=-1)
        assert np.all(outside == 0.0) and np.any(np.asarray(grad[..., heads[head]]) != 0), head
    with pytest.raises(ValueError, match="product_share"):
        losses.ova_ib_heads(z, product_share=1.0)
    with pytest.raises(ValueError, match=r"lower the shares or raise model\.embedding_dim"):
        losses.ova_ib_heads(z[..., :2])


def test_fusion_score_matches_literal_and_retrieves_aligned_samples():
    lib, npy = _masked_mlp(3, 4, width=5, seed=2)
    queries = jax.random.normal(jax.random.key(20), (2, 6, 4))
    cands = jax.random.normal(jax.random.key(21), (7, 4))
    score = jax.jit(losses.fusion_score, static_argnames=("fuse", "subset", "m"))
    got = score(queries, cands, fuse=lib, subset=(2, 0), m=1)
    want = ref.fusion_score(np.asarray(queries), np.asarray(cands), npy, (2, 0), 1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)
    # The default fusion: fused queries against one candidate modality rank as the mean
    # cosine (the registered scorer) does.
    z = jnp.eye(8) + 0.1 * jax.random.normal(jax.random.key(0), (3, 8, 8))
    scores = score(z[:2], z[2], fuse=losses.mean_fusion, subset=(0, 1), m=2)
    order = jnp.argsort(scores, axis=1)
    assert bool(jnp.all(order == jnp.argsort(jax.jit(losses.clip_score)(z[:2], z[2]), axis=1)))
    assert bool(jnp.all(scores.argmax(axis=1) == jnp.arange(8)))


def test_docstring_examples():
    result = doctest.testmod(fusion, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------- the model and the run


def test_masked_fusion_module():
    """One network for every subset: parameters at init, slots by modality index (the
    order of ``parts`` follows ``subset``), the objective's dtype out."""
    model = MaskedFusion(num_modalities=3, out_dim=4, hidden=(8,))
    parts = jax.random.normal(jax.random.key(0), (3, 5, 6))
    variables = model.init(jax.random.key(1), parts, (0, 1, 2))
    assert variables["params"]["mlp"]["Dense_0"]["kernel"].shape == (3 * 6 + 3, 8)
    one = model.apply(variables, parts[1:2], (1,))
    assert one.shape == (5, 4)
    swapped = model.apply(variables, parts[::-1][:2], (2, 1))
    np.testing.assert_allclose(swapped, model.apply(variables, parts[1:], (1, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="distinct modality indices"):
        model.apply(variables, parts[:2], (0, 0))


def _run(name, **model_fields):
    """(config, resolved, model, variables) of the default experiment with objective
    ``name``, tiny; ``model_fields`` set on the model (the trainer's own wiring aside)."""
    config = configs.load_experiment("experiments/default.py", f"objective={name},runlocal")
    config.model.representation_dim, config.model.embedding_dim = 8, 4
    config.model.mlp.hidden, config.model.projector_hidden = (8,), (8,)
    resolved = validation.validate_config(config, device_count=1, process_count=1)
    model = runtime.create_model(config, resolved).clone(**model_fields)
    variables = model.init(jax.random.key(0), runtime.example_inputs(resolved.modalities, 4))
    return config, resolved, model, variables


def test_validation_asks_the_model_for_the_fusion():
    _, resolved, model, variables = _run("confu")
    assert resolved.projector and not resolved.fusion and model.projector
    assert set(variables["params"]["projector"]) == {"held_out_0", "held_out_1", "held_out_2"}
    _, resolved, _, _ = _run("comm")
    assert resolved.fusion and not resolved.projector
    _, resolved, _, _ = _run("ova_ib")
    assert not resolved.fusion and not resolved.projector


@pytest.mark.parametrize("name", OBJECTIVES)
def test_run_objective_uses_the_models_fusion(name):
    """The run's keyword arguments bind the model's own fusion (ConFu: the MLP projector,
    as ``projector``; CoMM: the masked fusion, as ``fuse``), and the trainer's objective
    (under shard_map, with only the model's own parameters) equals the objective called
    with them."""
    fields = {"fusion": True} if name in losses.TAKES_FUSE else {}
    config, resolved, model, variables = _run(name, **fields)
    params = variables["params"]
    z = jax.random.normal(jax.random.key(3), (3, 8, 4))
    kwargs = objective.loss_kwargs(config, resolved, model, variables)
    if name in losses.TAKES_FUSE:
        assert set(params["fusion"]) == {"mlp"}
        got = kwargs["fuse"](z[:2], (0, 2))
        want = model.apply({"params": params}, z[:2], (0, 2), method="fuse")
    else:
        got = kwargs["projector"](z[1:], 0)
        want = model.apply({"params": params}, z[1:], 0, method="project")
    assert got.shape == (8, 4) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    plain = jax.jit(lambda z: losses.get(name)(z, **kwargs))(z)
    bound = objective.make_objective(resolved, model, runtime.create_mesh(jax.devices()[:1]))
    got = jax.jit(bound)(z, params, jax.random.key(0))  # the train step jits it
    chex.assert_trees_all_close(got, plain, rtol=1e-5, atol=1e-6)
