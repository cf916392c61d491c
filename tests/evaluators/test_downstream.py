"""Probes: separable classes, linear regression, early stopping, the subset table.

Every test uses the same data sizes and probe configs where it can, so the compiled
trainers are shared (one compile per config and shape)."""

from __future__ import annotations

import numpy as np
import pytest

from ovaib_jax import evaluators
from ovaib_jax.evaluators import Embedded, RunInfo

NAMES = ("a", "b", "c")
N_TRAIN, N_TEST, WIDTH = 200, 100, 4
FAST = dict(hidden=(16, 16, 16), learning_rate=1e-2, batch_size=32, max_epochs=40, patience=40)


def _split(seed: int, n: int) -> Embedded:
    """3 modalities of width 4; the class is a linear function of modality "a" only (well
    separated), and "reg" is an exact linear function of all reps."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(100).normal(size=(3, WIDTH)) * 4.0
    w = np.random.default_rng(101).normal(size=(3 * WIDTH, 2))
    y = rng.integers(0, 3, n)
    reps = {
        "a": centers[y] + 0.3 * rng.normal(size=(n, WIDTH)),
        "b": rng.normal(size=(n, WIDTH)),
        "c": rng.normal(size=(n, WIDTH)),
    }
    reg = np.concatenate([reps[m] for m in NAMES], axis=1) @ w + 5.0
    targets = {"label": y, "reg": reg.astype(np.float32)}
    return Embedded(None, reps, targets, NAMES)


TRAIN, TEST = _split(0, N_TRAIN), _split(1, N_TEST)


@pytest.mark.parametrize("probe", ["linear", "mlp"])
def test_separable_classes_give_full_accuracy(probe):
    ev = evaluators.get("downstream")(probe=probe, targets=["label"], **FAST)
    r = ev.run(TRAIN, TEST, RunInfo(seed=0))
    assert r["label/accuracy"] >= 0.99
    assert r["label/loss"] < 0.1
    assert 1 <= r["label/best_epoch"] <= r["label/epochs"] <= FAST["max_epochs"]
    assert ev.run(TRAIN, TEST, RunInfo(seed=0)) == r  # seeded


def test_linear_regression_target_gives_near_zero_mse():
    # Constant-step Adam has a noise floor: 200 epochs reach MSE ~ 1e-4 x variance here.
    ev = evaluators.get("downstream")(probe="linear", targets=["reg"], **dict(FAST, max_epochs=200))
    r = ev.run(TRAIN, TEST, RunInfo(seed=0))
    var = float(np.var(TEST.targets["reg"]))
    assert r["reg/mse"] < 1e-3 * var, (r["reg/mse"], var)  # reported in target units
    assert r["reg/r2"] > 0.999


def test_uninformative_modality_is_at_chance_and_early_stopping_stops():
    cfg = dict(FAST, max_epochs=300, patience=3, probe="linear")
    r = evaluators.get("downstream")(modalities=["b"], targets=["label"], **cfg).run(
        TRAIN, TEST, RunInfo(seed=0)
    )
    assert r["label/accuracy"] < 0.55  # chance 1/3; no information in "b"
    assert r["label/epochs"] < 300
    assert r["label/epochs"] == r["label/best_epoch"] + 3


def test_modality_subsets_table_has_every_subset():
    ev = evaluators.get("modality_subsets")(probe="linear", targets=["label"], **FAST)
    r = ev.run(TRAIN, TEST, RunInfo(seed=0))
    rows = ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
    table = r["table"].splitlines()
    assert len(table) == 2 + 2**3 - 1
    assert [line.split("|")[1].strip() for line in table[2:]] == rows
    for s in rows:  # "a" carries the class; subsets without it are near chance
        acc = r[f"{s}/label/accuracy"]
        assert (acc >= 0.99) if "a" in s else (acc < 0.6), (s, acc)
    # The a+b+c row is the same probe, same seed, as downstream on all modalities.
    full = evaluators.get("downstream")(probe="linear", targets=["label"], **FAST).run(
        TRAIN, TEST, RunInfo(seed=0)
    )
    assert r["a+b+c/label/accuracy"] == pytest.approx(full["label/accuracy"], abs=0.02)
    # Unbatched (one compiled call per subset) gives the same numbers up to float noise.
    one = evaluators.get("modality_subsets")(
        probe="linear", targets=["label"], modalities=["a", "b"], batch_subsets=False, **FAST
    ).run(TRAIN, TEST, RunInfo(seed=0))
    stacked = evaluators.get("modality_subsets")(
        probe="linear", targets=["label"], modalities=["a", "b"], max_stack=1, **FAST
    ).run(TRAIN, TEST, RunInfo(seed=0))
    assert stacked == one  # same compiled calls (one subset each), same numbers
    assert len(one["table"].splitlines()) == 2 + 3
    assert one["a+b/label/accuracy"] == pytest.approx(r["a+b/label/accuracy"], abs=0.02)


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"No train representations for modalities \['q'\]"):
        evaluators.get("downstream")(modalities=["q"]).run(TRAIN, TEST, RunInfo())
    with pytest.raises(ValueError, match="Target 'nope' missing"):
        evaluators.get("downstream")(targets=["nope"]).run(TRAIN, TEST, RunInfo())
    with pytest.raises(ValueError, match="needs the train split"):
        evaluators.get("modality_subsets")().run(None, TEST, RunInfo())


def _with_nuisance(e: Embedded, seed: int) -> Embedded:
    """``e`` plus a per-modality target ``nuis`` (N, 3, 3): modality "a" carries its row
    exactly (columns 0, 1 of its rep, column 2 constant), "b" and "c" none of theirs."""
    rng = np.random.default_rng(seed)
    n = e.num_examples
    nuis = rng.normal(size=(n, 3, 3)).astype(np.float32)
    nuis[:, 0, :2] = 3.0 * e.reps["a"][:, :2] - 1.0
    nuis[:, 0, 2] = 7.0  # constant: skipped
    return Embedded(None, e.reps, {**e.targets, "nuis": nuis}, NAMES)


def test_per_modality_targets_decode_each_modality_from_its_own_rep():
    train, test = _with_nuisance(TRAIN, 2), _with_nuisance(TEST, 3)
    ev = evaluators.get("downstream")(
        probe="linear", targets=["label"], per_modality_targets=["nuis"], **FAST
    )
    assert ev.extra_keys() == ("label", "nuis")
    r = ev.run(train, test, RunInfo(seed=0))
    assert r["nuis/a/r2"] > 0.95 and r["nuis/a/mse"] < 0.05  # standardised units
    for m in ("b", "c"):
        assert r[f"nuis/{m}/r2"] < 0.1 and r[f"nuis/{m}/mse"] > 0.9
    assert r["nuis/mean/r2"] == pytest.approx(np.mean([r[f"nuis/{m}/r2"] for m in NAMES]))
    assert "label/accuracy" in r and not any(k.startswith("nuis/") and k.count("/") == 1 for k in r)
    # Without targets=, per-modality targets are not probed as ordinary targets.
    default = evaluators.get("downstream")(probe="linear", **FAST).run(train, test, RunInfo(seed=0))
    assert not any(k.startswith("nuis") for k in default)
    with pytest.raises(ValueError, match=r"per-modality target 'label' must be .*\(N, M, k\)"):
        evaluators.get("downstream")(per_modality_targets=["label"], **FAST).run(
            train, test, RunInfo()
        )


def test_features_embedding_probes_z_instead_of_the_representations():
    # reps as in _with_nuisance ("a" carries its nuisance); z swaps the roles: z_b
    # carries b's nuisance row, z_a and z_c are noise. The probe must follow z.
    def split(seed):
        e = _with_nuisance(TRAIN if seed == 2 else TEST, seed)
        rng = np.random.default_rng(seed + 10)
        z = rng.normal(size=(3, e.num_examples, WIDTH)).astype(np.float32)
        z[1, :, :3] = e.targets["nuis"][:, 1] * 0.5 + 2.0
        return Embedded(z, e.reps, e.targets, NAMES)

    train, test = split(2), split(3)
    slow = dict(FAST, max_epochs=200, patience=200)  # 3 columns from scratch: 40 are too few
    kw = dict(probe="linear", targets=["label"], per_modality_targets=["nuis"], **slow)
    reps = evaluators.get("downstream")(**kw).run(train, test, RunInfo(seed=0))
    emb = evaluators.get("downstream")(features="embedding", **kw).run(train, test, RunInfo(seed=0))
    assert set(emb) == {f"embedding/{k}" for k in reps}
    assert reps["nuis/a/r2"] > 0.95 and reps["nuis/b/r2"] < 0.1
    assert emb["embedding/nuis/b/r2"] > 0.95
    assert emb["embedding/nuis/a/r2"] < 0.1 and emb["embedding/nuis/c/r2"] < 0.1
    assert emb["embedding/label/accuracy"] < 0.6  # the class lives in rep "a", not in z
    with pytest.raises(ValueError, match="features must be one of"):
        evaluators.get("downstream")(features="z")
    with pytest.raises(ValueError, match="needs the split's embeddings z"):
        evaluators.get("downstream")(features="embedding", **FAST).run(TRAIN, TEST, RunInfo())


def test_extra_linear_probe_and_few_label_probe(monkeypatch):
    from ovaib_jax.evaluators import downstream
    from ovaib_jax.evaluators.probe import few_label_indices

    seen = []
    real = downstream.fit_probes

    def spy(x_tr, y_tr, x_te, y_te, info, cfg, seed=0):
        seen.append((info.name, cfg.probe, np.asarray(y_tr).copy()))
        return real(x_tr, y_tr, x_te, y_te, info, cfg, seed)

    monkeypatch.setattr(downstream, "fit_probes", spy)
    kw = dict(FAST, probe="linear", targets=["label", "reg"])
    ev = evaluators.get("downstream")(extra_probes=("linear",), few_label_per_class=2, **kw)
    r = ev.run(TRAIN, TEST, RunInfo(seed=0))
    main = evaluators.get("downstream")(**kw).run(TRAIN, TEST, RunInfo(seed=0))
    assert {k: r[k] for k in main} == main  # the main probe's keys are unchanged
    assert r["linear/label/accuracy"] >= 0.99 and "linear/reg/mse" in r
    assert r["linear/label/accuracy"] == main["label/accuracy"]  # same probe, same seed
    # 6 examples in 12 dims, 8 of them noise: well above chance (1/3), not perfect.
    assert r["linear_few2/label/accuracy"] >= 0.6 and "linear_few2/label/loss" in r
    assert r["linear_few2/label/epochs"] >= 500  # one step per epoch: at least 500 steps
    assert not any(k.startswith("linear_few2/reg") for k in r)  # regression: no few-label
    # The few-label fit saw exactly 2 train examples per class, the ones the function picks.
    y = TRAIN.targets["label"]
    idx = few_label_indices(y, 2, seed=0)
    assert np.array_equal(np.bincount(y[idx], minlength=3), [2, 2, 2])
    assert np.array_equal(idx, few_label_indices(y, 2, seed=0))  # deterministic
    assert not np.array_equal(idx, few_label_indices(y, 2, seed=1))  # seeded
    few = [yt for name, _, yt in seen if len(yt) < N_TRAIN]
    assert len(few) == 1 and np.array_equal(few[0], y[idx])
    assert len(seen) == 2 * 3 + 1  # main and extra probe on both targets, 1 few-label fit


def test_few_label_indices_per_class():
    from ovaib_jax.evaluators.probe import few_label_indices

    y = np.array([0] * 5 + [1] * 3 + [3] * 1)
    idx = few_label_indices(y, 2, seed=4)
    assert np.array_equal(idx, np.sort(idx)) and len(set(idx)) == len(idx)
    assert np.array_equal(np.bincount(y[idx]), [2, 2, 0, 1])  # a rarer class keeps all
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        few_label_indices(y, 0)


def test_extra_probe_config_errors():
    with pytest.raises(ValueError, match=r"extra_probes.*'ridge'.*\('mlp', 'linear'\)"):
        evaluators.get("downstream")(extra_probes=("ridge",))
    with pytest.raises(ValueError, match="few_label_per_class must be an integer >= 0"):
        evaluators.get("downstream")(extra_probes=("linear",), few_label_per_class=-1)
    with pytest.raises(ValueError, match="few_label_per_class must be an integer >= 0"):
        evaluators.get("downstream")(extra_probes=("linear",), few_label_per_class=2.5)
    with pytest.raises(ValueError, match="few_label_per_class=10 needs extra_probes"):
        evaluators.get("downstream")(few_label_per_class=10)
    with pytest.raises(ValueError, match="duplicate"):
        evaluators.get("downstream")(extra_probes=("linear", "linear"))
    ev = evaluators.get("downstream")(extra_probes=["linear"], few_label_per_class=10)
    assert ev.config.extra_probes == ("linear",)  # lists from config.json become tuples


def test_default_targets_skip_candidate_target_columns():
    """Without ``targets`` every probe-able target is probed; an (N, M) integer array (a
    retrieval candidate target, e.g. colour bits, embedded into the same split) is not
    one, and is skipped instead of failing the whole evaluation."""

    def with_bits(e: Embedded, seed: int) -> Embedded:
        bits = np.random.default_rng(seed).integers(0, 2, (len(e.targets["label"]), 3))
        return Embedded(None, e.reps, {**e.targets, "bits": bits.astype(np.uint8)}, NAMES)

    ev = evaluators.get("downstream")(probe="linear", **FAST)
    r = ev.run(with_bits(TRAIN, 0), with_bits(TEST, 1), RunInfo(seed=0))
    assert r == ev.run(TRAIN, TEST, RunInfo(seed=0))
    with pytest.raises(ValueError, match=r"Integer target 'bits' must be \(N,\)"):
        evaluators.get("downstream")(probe="linear", targets=["bits"], **FAST).run(
            with_bits(TRAIN, 0), with_bits(TEST, 1), RunInfo(seed=0)
        )
