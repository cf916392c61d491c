"""Encoders, heads and the multi-modal model: shapes, independent forward passes, invariants."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ovaib_jax import models
from ovaib_jax.data.spec import Modality
from ovaib_jax.models import encoders, heads

KEY = jax.random.key(0)


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_registry_lists_valid_names():
    assert set(models.ENCODERS) == {"mlp", "cnn1d", "resnet18", "lstm", "small_cnn"}
    with pytest.raises(ValueError, match="valid encoders are mlp, cnn1d"):
        models.get_encoder("vit")


def test_mlp_matches_numpy_forward():
    mlp = encoders.MLP(out_dim=3, hidden=(5, 4), act="leaky_relu")
    x = jax.random.normal(KEY, (6, 2, 4))  # flattened to (6, 8)
    params = mlp.init(KEY, x)["params"]
    h = np.asarray(x).reshape(6, -1)
    for i in range(2):
        h = h @ np.asarray(params[f"Dense_{i}"]["kernel"]) + np.asarray(
            params[f"Dense_{i}"]["bias"]
        )
        h = np.where(h > 0, h, 0.01 * h)
    h = h @ np.asarray(params["Dense_2"]["kernel"]) + np.asarray(params["Dense_2"]["bias"])
    np.testing.assert_allclose(mlp.apply({"params": params}, x), h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length", [7, 32, 3500])
def test_cnn1d_any_length(length):
    enc = encoders.CNN1D(out_dim=5, features=(4, 8))
    x = jax.random.normal(KEY, (3, length, 2))
    params = enc.init(KEY, x)
    # Same parameters for every length: the global pooling makes them length-agnostic.
    assert _count(params) == _count(enc.init(KEY, x[:, :7]))
    assert enc.apply(params, x).shape == (3, 5)
    # A (N, T) signal is a single channel.
    single = enc.init(KEY, x[..., 0])
    np.testing.assert_array_equal(enc.apply(single, x[..., 0]), enc.apply(single, x[..., :1]))


def test_cnn1d_global_average_of_constant_signal():
    """Constant input, kernel 1: every time step identical, so the length cannot matter."""
    enc = encoders.CNN1D(out_dim=4, features=(6,), kernel_size=1, strides=1)
    x = jnp.ones((2, 10, 3))
    params = enc.init(KEY, x)
    np.testing.assert_allclose(enc.apply(params, x), enc.apply(params, jnp.ones((2, 37, 3))), 1e-6)


def test_resnet18_parameter_count_matches_torchvision():
    """torchvision resnet18 has 11,176,512 parameters besides its classifier (3 channels)."""
    enc = encoders.ResNet18(out_dim=10)
    shapes = jax.eval_shape(lambda: enc.init(KEY, jnp.zeros((1, 64, 64, 3))))
    assert _count(shapes["params"]) == 11_176_512 + 512 * 10 + 10
    # 32 input channels (MuJoCo stacks) only change the stem: 7*7*(32-3)*64 more weights.
    shapes32 = jax.eval_shape(lambda: enc.init(KEY, jnp.zeros((1, 64, 64, 32))))
    assert _count(shapes32["params"]) - _count(shapes["params"]) == 7 * 7 * 29 * 64


def test_resnet18_batchnorm_statistics():
    enc = encoders.ResNet18(out_dim=4, width=4, stage_sizes=(1, 1))
    x = jax.random.normal(KEY, (4, 16, 16, 2)) * 3 + 1
    variables = enc.init(KEY, x)
    assert "batch_stats" in variables
    out, upd = enc.apply(variables, x, train=True, mutable=["batch_stats"])
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(upd["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    # Training mode normalises with the batch's statistics, eval mode with the running ones.
    assert not np.allclose(out, enc.apply(variables, x, train=False))
    # Channel tiling (depth 1 -> 3 channels) gives the same result as tiling by hand.
    enc3 = encoders.ResNet18(out_dim=4, width=4, stage_sizes=(1,), input_channels=3)
    d = jax.random.normal(KEY, (2, 8, 8, 1))
    v3 = enc3.init(KEY, d)
    plain = encoders.ResNet18(out_dim=4, width=4, stage_sizes=(1,))
    np.testing.assert_allclose(
        enc3.apply(v3, d), plain.apply(v3, jnp.tile(d, (1, 1, 1, 3))), rtol=1e-6
    )


def test_lstm_last_state_is_causal():
    enc = encoders.LSTM(out_dim=3, hidden=8)
    x = jax.random.normal(KEY, (2, 6, 5))
    params = enc.init(KEY, x)
    out = enc.apply(params, x)
    assert out.shape == (2, 3)
    # The output reads the whole sequence: both the first and the last step matter.
    for t in (0, 5):
        assert not np.allclose(out, enc.apply(params, x.at[:, t].add(1.0)))
    # ... and only the sequence up to the end: a prefix's output differs from the full one.
    assert not np.allclose(out, enc.apply(params, x[:, :5]))


def test_small_cnn_shapes():
    enc = encoders.SmallCNN(out_dim=7, features=(4, 8))
    x = jnp.zeros((2, 28, 28))
    assert enc.apply(enc.init(KEY, x), x).shape == (2, 7)


def test_projection_head_layers():
    head = heads.ProjectionHead(out_dim=4, hidden=6, num_layers=3)
    params = head.init(KEY, jnp.zeros((2, 5)))["params"]
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(5, 6), (6, 6), (6, 4)]


def test_mlp_projector_traced_index_matches_static():
    proj = heads.MLPProjector(num_modalities=3, out_dim=4, hidden=(5,))
    rest = jax.random.normal(KEY, (2, 6, 4))
    variables = proj.init(KEY, rest, 0)
    variables = {
        "params": {
            **variables["params"],
            **proj.init(jax.random.key(1), rest, 1)["params"],
            **proj.init(jax.random.key(2), rest, 2)["params"],
        }
    }
    for m in range(3):
        np.testing.assert_allclose(
            proj.apply(variables, rest, jnp.int32(m)), proj.apply(variables, rest, m), rtol=1e-6
        )
    # The input is concat(z_k for k != m) per sample: transposing rows changes the answer.
    assert not np.allclose(proj.apply(variables, rest, 0), proj.apply(variables, rest[::-1], 0))


def _model(**kw):
    mods = [Modality("a", (5,), "float32", "mlp"), Modality("img", (8, 8, 1), "uint8", "small_cnn")]
    import ml_collections

    cfg = ml_collections.ConfigDict(
        {
            "encoders": "",
            "representation_dim": 6,
            "embedding_dim": 4,
            "head_layers": 2,
            "head_hidden": 0,
            "min_temperature": 1e-3,
            "max_temperature": 10.0,
            "mlp": {"hidden": (8,), "act": "relu"},
            "small_cnn": {"features": (4,)},
            "learnable_temperature": kw.pop("learnable_temperature", False),
            "projector_hidden": (8,),
            "dtype": kw.pop("dtype", "float32"),
            "objective_dtype": kw.pop("objective_dtype", "float32"),
            "branches": kw.pop("branches", ""),
        }
    )
    if "embedding_dim" in kw:
        cfg.embedding_dim = kw.pop("embedding_dim")
    return models.create_model(cfg, mods, **kw), mods


def test_multimodal_model_shapes_and_uint8_scaling():
    model, _ = _model()
    a = jax.random.normal(KEY, (3, 5))
    img = jax.random.randint(KEY, (3, 8, 8, 1), 0, 256).astype(jnp.uint8)
    variables = model.init(KEY, {"a": a, "img": img})
    (z, reps) = model.apply(variables, {"a": a, "img": img, "label": jnp.zeros(3)})
    assert z.shape == (2, 3, 4) and reps["a"].shape == reps["img"].shape == (3, 6)
    z2, _ = model.apply(variables, {"a": a, "img": img.astype(jnp.float32) / 255.0})
    np.testing.assert_allclose(z, z2, rtol=1e-6)
    with pytest.raises(KeyError, match="lacks modalities"):
        model.apply(variables, {"a": a})


def test_multimodal_normalisation_temperature_projector():
    model, _ = _model(
        normalize_embeddings=True, learnable_temperature=True, init_temperature=0.05, projector=True
    )
    inputs = {"a": jnp.ones((3, 5)), "img": jnp.ones((3, 8, 8, 1), jnp.uint8)}
    variables = model.init(KEY, inputs)
    z, _ = model.apply(variables, inputs)
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(
        model.apply(variables, method=models.MultiModalModel.temperature), 0.05, rtol=1e-6
    )
    assert set(variables["params"]["projector"]) == {"held_out_0", "held_out_1"}
    out = model.apply(variables, z[1:], 0, method=models.MultiModalModel.project)
    assert out.shape == (3, 4)


def test_a_learned_temperature_past_its_bound_can_come_back():
    """tau = clip(exp(log tau)) had gradient 0 past a bound, so Adam's momentum carried log
    tau further out and it never returned. Past the lower bound the gradient of a loss
    that wants a larger tau now reaches log tau (d/dlog tau = 2 (tau_c - 0.05) * tau for
    the clipped tau_c = 0.01); one that wants it smaller still gets 0; inside the bounds
    it is the plain derivative."""
    model, _ = _model(learnable_temperature=True, init_temperature=0.05)
    inputs = {"a": jnp.ones((3, 5)), "img": jnp.ones((3, 8, 8, 1), jnp.uint8)}
    variables = model.init(KEY, inputs)

    def grad(log_tau, target):
        params = dict(variables["params"], log_temperature=jnp.float32(log_tau))
        return jax.grad(
            lambda p: (model.apply({"params": p}, method=models.MultiModalModel.temperature)
                       - target) ** 2
        )(params)["log_temperature"]  # fmt: skip

    lo = model.min_temperature
    below = float(np.log(lo / 2))
    np.testing.assert_allclose(grad(below, 0.05), 2 * (lo - 0.05) * lo / 2, rtol=1e-5)
    assert float(grad(below, 0.0)) == 0.0  # a step would move it further out
    inside = float(np.log(0.03))
    np.testing.assert_allclose(grad(inside, 0.05), 2 * (0.03 - 0.05) * 0.03, rtol=1e-5)


def test_branches_are_separate_models_writing_their_slices_of_z():
    """With branch_dims (2, 1, 1) each branch is the one-branch model of its width on its
    own parameters (encoder_{m}_b{k}, head_{m}_b{k}): z[..., slice k] is that model's z,
    and the representation is the three models' representations side by side."""
    model, _ = _model(branches="2,1,1")
    assert model.branch_dims == (2, 1, 1)
    inputs = {
        "a": jax.random.normal(KEY, (3, 5)),
        "img": jax.random.randint(jax.random.key(1), (3, 8, 8, 1), 0, 256).astype(jnp.uint8),
    }
    params = model.init(KEY, inputs)["params"]
    assert set(params) == {f"{p}_{m}_b{k}" for p in ("encoder", "head") for m in ("a", "img")
                           for k in range(3)}  # fmt: skip
    z, reps = model.apply({"params": params}, inputs)
    assert z.shape == (2, 3, 4) and reps["a"].shape == (3, 18)
    start = 0
    for k, width in enumerate((2, 1, 1)):
        alone, _ = _model(embedding_dim=width)
        names = [f"{p}_{m}" for p in ("encoder", "head") for m in ("a", "img")]
        own = {name: params[f"{name}_b{k}"] for name in names}
        z_k, reps_k = alone.apply({"params": own}, inputs)
        np.testing.assert_allclose(z[..., start : start + width], z_k, rtol=1e-6, atol=1e-7)
        for m in ("a", "img"):
            np.testing.assert_allclose(reps[m][:, 6 * k : 6 * k + 6], reps_k[m], rtol=1e-6)
        start += width


@pytest.mark.parametrize("spec", ["2,x,1", "0,4", "4,-1,1", "2.0,2"])
def test_branches_must_be_positive_integer_widths(spec):
    with pytest.raises(ValueError, match="comma-separated positive embedding widths"):
        models.parse_branch_dims(spec)


def test_branches_must_sum_to_d():
    assert models.parse_branch_dims(" 2, 1 ") == (2, 1) and models.parse_branch_dims("") == ()
    model, _ = _model(branches="2,1")
    inputs = {"a": jnp.ones((3, 5)), "img": jnp.ones((3, 8, 8, 1), jnp.uint8)}
    with pytest.raises(ValueError, match="summing to embedding_dim = 4"):
        model.init(KEY, inputs)


def test_encoder_overrides():
    mods = [Modality("a", (5,), "float32", "mlp"), Modality("b", (9, 2), "float32", "cnn1d")]
    assert models.resolve_encoders(mods, models.parse_encoder_overrides("b = mlp")) == [
        "mlp",
        "mlp",
    ]
    with pytest.raises(ValueError, match="malformed"):
        models.parse_encoder_overrides("b:mlp")
    with pytest.raises(ValueError, match=r"names modality 'b' twice \('mlp' and 'cnn1d'\)"):
        models.parse_encoder_overrides("b=mlp, b=cnn1d")  # the last one silently won
    with pytest.raises(ValueError, match=r"\['c'\]"):
        models.resolve_encoders(mods, {"c": "mlp"})


def test_modalities_of_one_batch_must_hold_the_same_examples():
    model, _ = _model()
    a = jax.random.normal(KEY, (3, 5))
    img = jnp.zeros((4, 8, 8, 1), jnp.uint8)
    with pytest.raises(AssertionError, match=r"different shape prefixes: \[\(3,\), \(4,\)\]"):
        model.init(KEY, {"a": a, "img": img})


# One tiny instance of every encoder family and an input of its layout.
FAMILIES = {
    "mlp": (encoders.MLP, {"hidden": (8,)}, (3, 2, 4)),
    "cnn1d": (encoders.CNN1D, {"features": (4, 8)}, (3, 16, 2)),
    "resnet18": (encoders.ResNet18, {"width": 4, "stage_sizes": (1, 1)}, (3, 8, 8, 2)),
    "lstm": (encoders.LSTM, {"hidden": 4, "num_layers": 2}, (3, 5, 3)),
    "small_cnn": (encoders.SmallCNN, {"features": (4, 8)}, (3, 8, 8, 1)),
}


def _dtypes(tree) -> set:
    return {np.dtype(x.dtype) for x in jax.tree.leaves(tree)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_encoder_computes_in_bfloat16_with_float32_parameters(family):
    """``dtype=bfloat16``: float32 parameters (the dtype is not a parameter: the same
    tree as the float32 encoder's), bfloat16 outputs of every layer, float32 BatchNorm
    statistics. Shapes and dtypes only (``eval_shape``); tests/test_mixed_precision.py
    checks the numbers."""
    cls, kwargs, shape = FAMILIES[family]
    x = jax.ShapeDtypeStruct(shape, jnp.bfloat16)
    f32, bf16 = cls(out_dim=5, **kwargs), cls(out_dim=5, dtype=jnp.bfloat16, **kwargs)
    variables = jax.eval_shape(bf16.init, KEY, x)
    assert variables == jax.eval_shape(f32.init, KEY, x)
    assert _dtypes(variables) == {np.dtype(np.float32)}
    out, state = jax.eval_shape(
        lambda v, x: bf16.apply(
            v,
            x,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Dense | nn.Conv | nn.BatchNorm),
        ),
        variables,
        x,
    )
    assert out.dtype == jnp.bfloat16 and out.shape == (3, 5)
    assert _dtypes(state["intermediates"]) == {np.dtype(jnp.bfloat16)}
    stats = state.get("batch_stats", {})
    assert bool(stats) == (family == "resnet18")
    assert _dtypes(stats) <= {np.dtype(np.float32)}


def test_heads_compute_in_bfloat16():
    head = heads.ProjectionHead(out_dim=4, hidden=6, dtype=jnp.bfloat16)
    h = jax.ShapeDtypeStruct((3, 5), jnp.float32)
    params = jax.eval_shape(head.init, KEY, h)
    assert _dtypes(params) == {np.dtype(np.float32)}
    assert jax.eval_shape(head.apply, params, h).dtype == jnp.bfloat16
    proj = heads.MLPProjector(num_modalities=2, out_dim=4, hidden=(5,), dtype=jnp.bfloat16)
    rest = jax.ShapeDtypeStruct((1, 3, 4), jnp.float32)
    params = jax.eval_shape(lambda r: proj.init(KEY, r, 0), rest)
    assert _dtypes(params) == {np.dtype(np.float32)}
    assert jax.eval_shape(lambda p, r: proj.apply(p, r, 0), params, rest).dtype == jnp.bfloat16


def test_multimodal_dtypes():
    """bfloat16 computation: representations bfloat16; z, the projector's output and the
    temperature in ``objective_dtype`` (float32 unless set); parameters float32."""
    kw = {"learnable_temperature": True, "init_temperature": 0.05, "projector": True}
    inputs = {
        "a": jax.ShapeDtypeStruct((3, 5), jnp.float32),
        "img": jax.ShapeDtypeStruct((3, 8, 8, 1), jnp.uint8),
    }
    for objective_dtype in ("float32", "bfloat16"):
        model, _ = _model(dtype="bfloat16", objective_dtype=objective_dtype, **kw)
        variables = jax.eval_shape(model.init, KEY, inputs)
        assert _dtypes(variables) == {np.dtype(np.float32)}
        z, reps = jax.eval_shape(model.apply, variables, inputs)
        assert _dtypes(reps) == {np.dtype(jnp.bfloat16)}
        assert z.dtype == np.dtype(objective_dtype)
        project = functools.partial(model.apply, method=models.MultiModalModel.project)
        rest = jax.ShapeDtypeStruct((z.shape[0] - 1, *z.shape[1:]), z.dtype)
        out = jax.eval_shape(lambda v, r, p=project: p(v, r, 0), variables, rest)
        assert out.dtype == np.dtype(objective_dtype)
        tau = jax.eval_shape(
            functools.partial(model.apply, method=models.MultiModalModel.temperature), variables
        )
        assert tau.dtype == np.dtype(objective_dtype)
    with pytest.raises(ValueError, match=r"'float16'.*valid dtypes are float32, bfloat16"):
        models.get_dtype("float16")


def test_normalised_embeddings_of_a_zero_row_have_finite_gradients():
    """A zero input row through bias-free-at-init layers gives z = 0; normalising it with a
    squared-norm floor of 1e-30 made rsqrt's derivative overflow (inf * 0 = NaN gradients,
    the run stopped at step 0). The floor of the objectives' own normalisation keeps them
    finite, and z stays 0 there."""
    model, _ = _model(normalize_embeddings=True)
    a = jax.random.normal(KEY, (3, 5)).at[1].set(0.0)
    img = jnp.ones((3, 8, 8, 1), jnp.uint8)
    variables = model.init(KEY, {"a": a, "img": img})

    def f(params):
        z, _ = model.apply({**variables, "params": params}, {"a": a, "img": img})
        return jnp.sum(z[..., 0] * jnp.arange(1.0, 4.0)[None]), z

    grads, z = jax.grad(f, has_aux=True)(variables["params"])
    np.testing.assert_array_equal(z[0, 1], 0.0)
    np.testing.assert_allclose(jnp.linalg.norm(z[:, [0, 2]], axis=-1), 1.0, rtol=1e-5)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_sequence_and_image_encoders_refuse_inputs_they_would_misread():
    """An LSTM given 4-D input scanned over the wrong axis (z of shape (N, 5, d)); a
    ResNet-18 told input_channels=3 silently dropped the channels past the third."""
    lstm = encoders.LSTM(out_dim=3, hidden=4)
    with pytest.raises(ValueError, match=r"lstm expects \(N, T, F\)"):
        lstm.init(KEY, jnp.zeros((2, 5, 6, 7)))
    net = encoders.ResNet18(out_dim=3, width=4, stage_sizes=(1,), input_channels=3)
    with pytest.raises(ValueError, match=r"got images of 5 channels .* would drop channels"):
        net.init(KEY, jnp.zeros((2, 8, 8, 5)))
    x = jax.random.normal(KEY, (2, 8, 8, 1))  # fewer channels are still tiled
    assert net.apply(net.init(KEY, x), x).shape == (2, 3)


def test_projectors_use_every_hidden_width():
    """projector_hidden=(8, 16) built (in, 8), (8, 8), (8, 4): only the first width."""
    proj = heads.MLPProjector(num_modalities=3, out_dim=4, hidden=(8, 16))
    params = proj.init(KEY, jnp.zeros((2, 6, 4)), 0)["params"]["held_out_0"]
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(8, 8), (8, 16), (16, 4)]
    fusion = heads.MaskedFusion(num_modalities=2, out_dim=4, hidden=(8, 16))
    params = fusion.init(KEY, jnp.zeros((1, 2, 4)), (0,))["params"]["mlp"]
    assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(10, 8), (8, 16), (16, 4)]
    with pytest.raises(ValueError, match="needs >= 1 layers"):
        heads.ProjectionHead(out_dim=4, hidden=6, num_layers=0).init(KEY, jnp.zeros((2, 5)))
