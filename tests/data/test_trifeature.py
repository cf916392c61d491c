"""``ovaib_trifeature``: the factor generator (redundancy, uniqueness, colour bits of order M
only, the task label), the renderer, a tiny build (spec, stored factors, the shape drawn in
every view) and determinism; the experiment file validates for every objective."""

import itertools
import math
import os

import numpy as np
import pytest
from scipy import stats

from ovaib_jax import configs, data, losses
from ovaib_jax.data import trifeature as T
from ovaib_jax.validation import validate_config

TINY = dict(num_train=64, num_test=32)
EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "trifeature.py")
P_MIN = 1e-4  # fixed seeds: each check passes or fails deterministically


def config(**kw):
    return T.TrifeatureConfig(name="test", **kw)


def codes(columns):
    """Integer code of integer columns (n, k) with radix 10: (n,)."""
    return (np.asarray(columns) * 10 ** np.arange(np.shape(columns)[1])).sum(1)


def mutual_information(a, b):
    """Plug-in MI (nats) of two integer arrays."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def independence_p(a, b):
    """p-value of Pearson's chi-square test of independence of two integer arrays."""
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1.0)
    return stats.chi2_contingency(table).pvalue


def uniform_p(x, k):
    """p-value of the chi-square test that x is uniform over 0..k-1."""
    return stats.chisquare(np.bincount(x, minlength=k)).pvalue


# ------------------------------------------------------------------------- no data


def test_spec_without_data():
    for M in (3, 4, 5):
        spec = data.get_spec("ovaib_trifeature", config=f"m{M}")
        assert spec.name == "ovaib_trifeature" and not spec.manual
        assert [(m.name, m.shape, m.dtype, m.encoder) for m in spec.modalities] == [
            (f"view{m}", (32, 32, 3), "uint8", "small_cnn") for m in range(M)
        ]
        per_view = [f"texture_{m}" for m in range(M)] + [f"color_{m}" for m in range(M)]
        names = ["shape", *per_view, "synergy_label", "task_label"]
        assert [t.name for t in spec.targets] == names
        assert all(t.kind == "classification" for t in spec.targets)
        assert [t.num_classes for t in spec.targets] == [10] * (1 + 2 * M) + [2, 10]
    assert len(data.get_spec("ovaib_trifeature", M=2).modalities) == 2
    for bad in (dict(M=1), dict(max_scale=1.5), dict(min_scale=0.0), dict(noise=-1.0)):
        with pytest.raises(ValueError, match="ovaib_trifeature"):
            data.get_spec("ovaib_trifeature", **bad)


@pytest.mark.parametrize("M", [3, 4, 5])
def test_colour_bits_are_dependent_at_order_M_only(M):
    n = 20_000
    f = T.sample_factors(np.random.default_rng([7, M]), n, M)
    bits = T.color_bits(f["color"])
    assert set(np.unique(f["color"])) == set(range(10))
    # The XOR of all M bits is 0 exactly: the last bit is the XOR of the others.
    assert not np.bitwise_xor.reduce(bits, axis=1).any()
    # Any M-1 views' bits (hence every proper subset) are uniform over {0, 1}^(M-1).
    weights = 2 ** np.arange(M - 1)
    for subset in itertools.combinations(range(M), M - 1):
        code = bits[:, list(subset)] @ weights
        assert uniform_p(code, 2 ** (M - 1)) > P_MIN, subset
        freq = np.bincount(code, minlength=2 ** (M - 1)) / n
        assert np.abs(freq - 2.0 ** (1 - M)).max() < 0.02, subset
    # Shades are uniform and independent of the bits.
    shade = f["color"] % T.SHADES
    for m in range(M):
        assert uniform_p(shade[:, m], T.SHADES) > P_MIN
        assert independence_p(shade[:, m], bits[:, m]) > P_MIN


@pytest.mark.parametrize("M", [3, 5])
def test_shape_shared_textures_private_and_independent(M):
    n = 20_000
    f = T.sample_factors(np.random.default_rng([8, M]), n, M)
    assert f["shape"].shape == (n,) and f["texture"].shape == f["color"].shape == (n, M)
    assert uniform_p(f["shape"], 10) > P_MIN
    for m in range(M):
        assert uniform_p(f["texture"][:, m], 10) > P_MIN
        assert independence_p(f["texture"][:, m], f["shape"]) > P_MIN
        assert independence_p(f["texture"][:, m], f["color"][:, m]) > P_MIN
    for i, j in itertools.combinations(range(M), 2):
        assert independence_p(f["texture"][:, i], f["texture"][:, j]) > P_MIN, (i, j)
        assert independence_p(f["color"][:, i], f["color"][:, j]) > P_MIN, (i, j)


def test_labels_are_the_documented_functions():
    n = 20_000
    f = T.sample_factors(np.random.default_rng(9), n, 3)
    t = T.labels(f)
    bits = f["color"] // 5
    np.testing.assert_array_equal(t["synergy_label"], bits[:, 0] ^ bits[:, 1])
    np.testing.assert_array_equal(t["synergy_label"], bits[:, 2])
    np.testing.assert_array_equal(t["task_label"], (f["texture"][:, 0] + f["color"][:, 1]) % 10)
    # Task synergy: either factor alone says nothing of the task, the two determine it.
    task = t["task_label"]
    assert mutual_information(task, f["texture"][:, 0]) < 0.01
    assert mutual_information(task, f["color"][:, 1]) < 0.01
    joint = codes(np.c_[f["texture"][:, 0], f["color"][:, 1]])
    assert abs(mutual_information(task, joint) - math.log(10)) < 0.01
    # The synergy label is independent of any M - 2 = 1 other view's bit.
    assert mutual_information(t["synergy_label"], bits[:, 0]) < 0.001


def test_render_draws_mask_texture_and_colour():
    c = config(M=1)
    rng = np.random.default_rng(3)
    n = 400
    shape, texture, color = (rng.integers(0, 10, n) for _ in range(3))
    nuisance = T.sample_nuisance(rng, n, c)[:, 0]
    nuisance[:, 4:] = 0.0  # no colour jitter
    img = T.render(shape, texture, color, nuisance, 0.0, rng)
    assert img.shape == (n, 32, 32, 3) and img.dtype == np.uint8
    cover = T.shape_coverage(shape, nuisance)
    pattern = T.texture_pattern(texture, nuisance)
    background = round(T.BACKGROUND * 255)
    assert np.all(img[cover == 0] == background)
    inside = cover == 1
    expected = np.rint(255 * T.PALETTE[color][:, None, None, :] * pattern[..., None])
    np.testing.assert_allclose(img[inside], expected[inside], atol=1)  # rounding at .5
    assert set(np.unique(pattern)) <= {T.DARK, 1.0}
    # Each shape is one region, moved and scaled: its area / radius^2 is the same in
    # every view (up to the pixel grid), and the ten shapes are distinct regions.
    area = cover.sum((1, 2)) / (T.BASE_RADIUS * nuisance[:, 2]) ** 2
    for s in range(10):
        a = area[shape == s]
        assert a.std() / a.mean() < 0.03, (T.SHAPE_NAMES[s], a.std() / a.mean())
    fixed = np.repeat(nuisance[:1], 10, axis=0)
    masks = T.shape_coverage(np.arange(10), fixed) > 0.5
    patterns = T.texture_pattern(np.arange(10), fixed)
    for i, j in itertools.combinations(range(10), 2):
        iou = (masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum()
        assert iou < 0.9, (T.SHAPE_NAMES[i], T.SHAPE_NAMES[j], iou)
        assert np.mean(patterns[i] != patterns[j]) > 0.15, (T.TEXTURE_NAMES[i], T.TEXTURE_NAMES[j])


# ------------------------------------------------------------------------ a tiny build


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("trifeature")
    builder = data.prepare("ovaib_trifeature", data_dir=root / "a", config="m3", **TINY)
    return builder, data.load_arrays(builder.as_data_source("train"))


def test_build_stores_every_factor(built):
    builder, a = built
    spec, n, M = builder.spec, TINY["num_train"], 3
    for m in spec.modalities:
        assert a[m.name].shape == (n, 32, 32, 3) and a[m.name].dtype == np.uint8
    for t in spec.targets:
        assert a[t.name].shape == (n,) and np.issubdtype(a[t.name].dtype, np.integer)
        assert 0 <= a[t.name].min() and a[t.name].max() < t.num_classes
    texture = np.stack([a[f"texture_{m}"] for m in range(M)], 1)
    color = np.stack([a[f"color_{m}"] for m in range(M)], 1)
    np.testing.assert_array_equal(a["color_bits"], color // 5)
    assert not np.bitwise_xor.reduce(a["color_bits"], axis=1).any()
    np.testing.assert_array_equal(a["synergy_label"], a["color_bits"][:, 2])
    np.testing.assert_array_equal(a["task_label"], (texture[:, 0] + color[:, 1]) % 10)
    np.testing.assert_array_equal(a["texture_onehot"], np.eye(10)[texture])
    nuisance = a["nuisance"]
    assert nuisance.shape == (n, M, len(T.NUISANCE_FIELDS)) and nuisance.dtype == np.float32
    assert np.abs(nuisance[..., :2]).max() <= 3.0
    assert 0.8 <= nuisance[..., 2].min() and nuisance[..., 2].max() <= 1.1
    assert len(data.load_arrays(builder.as_data_source("test"))["shape"]) == TINY["num_test"]


def test_every_view_shows_the_stored_shape(built):
    """From the pixels alone: the mask that best explains each view's foreground, among
    the ten shapes at that view's stored shift and scale, is the example's one shape.

    Foreground evidence: each pixel's largest channel distance from the background grey,
    clipped at 40 (so the texture's bright parts do not dominate), correlated with each
    candidate mask's coverage."""
    _, a = built
    n = TINY["num_train"]
    background = round(T.BACKGROUND * 255)
    for m in range(3):
        d = np.minimum(np.abs(a[f"view{m}"].astype(np.float64) - background).max(-1), 40.0)
        nuisance = np.repeat(a["nuisance"][:, m], 10, axis=0)
        masks = T.shape_coverage(np.tile(np.arange(10), n), nuisance).reshape(n, 10, 32, 32)
        d = d - d.mean((1, 2), keepdims=True)
        masks = masks - masks.mean((2, 3), keepdims=True)
        corr = (d[:, None] * masks).sum((2, 3)) / np.sqrt(
            (d**2).sum((1, 2))[:, None] * (masks**2).sum((2, 3))
        )
        np.testing.assert_array_equal(corr.argmax(1), a["shape"], err_msg=f"view{m}")
        assert corr.max(1).min() > 0.7


def test_builds_are_deterministic(built, tmp_path):
    first, a = built
    second = data.prepare("ovaib_trifeature", data_dir=tmp_path, config="m3", **TINY)
    files = sorted(p.name for p in first.data_path.iterdir() if "array_record" in p.name)
    assert files and files == sorted(
        p.name for p in second.data_path.iterdir() if "array_record" in p.name
    )
    for name in files:
        assert (first.data_path / name).read_bytes() == (second.data_path / name).read_bytes()

    # The train split holds the factors drawn from the stream (seed, split 0) (in the
    # record files' order); another seed draws other samples.
    def factor_rows(f):
        return sorted(map(tuple, np.c_[f["shape"], f["texture"], f["color"]].tolist()))

    stored = {k: np.stack([a[f"{k}_{m}"] for m in range(3)], 1) for k in ("texture", "color")}
    f0, f1 = (T.sample_factors(np.random.default_rng([s, 0]), 64, 3) for s in (0, 1))
    assert factor_rows(f0) == factor_rows({"shape": a["shape"], **stored})
    assert factor_rows(f0) != factor_rows(f1)


# ------------------------------------------------------------------------ experiment


def test_experiment_validates_for_every_objective():
    for name in losses.names():
        config_ = configs.load_experiment(EXPERIMENT, f"objective={name}")
        resolved = validate_config(config_, device_count=8, process_count=2)
        assert resolved.objective is losses.get(name)
        assert [m.name for m in resolved.modalities] == ["view0", "view1", "view2"]
    config_ = configs.load_experiment(EXPERIMENT, "M=5,beta=0.5,runlocal")
    assert len(validate_config(config_, device_count=1, process_count=1).modalities) == 5
    assert config_.objective.beta == 0.5 and config_.dataset.config.num_train == 512
    spec = data.get_spec("ovaib_trifeature", config="m5")
    targets = {t.name for t in spec.targets}
    kwargs = config_.evaluator_kwargs
    assert set(kwargs.modality_subsets.targets) <= targets
    assert kwargs.retrieval.label_target in targets
    assert set(kwargs.downstream.per_modality_targets) == {"texture_onehot", "nuisance"}
    with pytest.raises(ValueError, match="M must be"):
        configs.load_experiment(EXPERIMENT, "M=6")
