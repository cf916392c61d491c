"""Markdown report helpers and PNG plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovaib_jax.evaluators import plots, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_mean_std_formatting():
    assert report.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std
    assert report.format_mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert report.format_mean_std([0.95, 0.97], scale=100, digits=1) == "96.0 ± 1.4"
    assert report.format_mean_std([0.5]) == "0.50"  # one seed: no spread shown
    assert report.format_mean_std(0.12345, digits=3) == "0.123"
    assert report.format_mean_std([1.0, 3.0], pm=" +- ", digits=0) == "2 +- 1"
    assert report.format_mean_std([float("nan"), 1.0]) == "nan"


def test_seeds_table_layout_and_best():
    results = {
        "ova_ib": {"VFD": [0.95, 0.97], "MSE": [0.001, 0.003]},
        "clip": {"VFD": [0.93, 0.94]},
    }
    table = report.seeds_table(results, row_header="objective", scale=100, best="max")
    lines = table.splitlines()
    assert lines[0] == "| objective | VFD | MSE |"
    assert lines[1] == "|:---|---:|---:|"
    assert lines[2] == "| ova_ib | **96.00 ± 1.41** | **0.20 ± 0.14** |"
    assert lines[3] == "| clip | 93.50 ± 0.71 | - |"
    with pytest.raises(ValueError, match="best must be"):
        report.seeds_table(results, best="top")


def test_collect_and_markdown_table_checks():
    per_seed = [{"acc": 0.9, "table": "x", "n": 3}, {"acc": 0.8}]
    assert report.collect(per_seed) == {"acc": [0.9, 0.8], "n": [3.0]}
    with pytest.raises(ValueError, match="has 1 cells, not 2"):
        report.markdown_table(["a", "b"], [["x"]])


def _check_png(path):
    with open(path, "rb") as f:
        head = f.read(8)
    assert head == PNG_MAGIC


def test_plots_write_png(tmp_path):
    runs = {}
    for name in ("ova_ib", "clip"):
        p = tmp_path / name / "metrics.jsonl"
        p.parent.mkdir()
        with open(p, "w") as f:
            for step in range(1, 21):
                f.write(json.dumps({"step": step, "loss": 1.0 / step, "accuracy": step / 20}))
                f.write("\n")
        runs[name] = p
    _check_png(
        plots.plot_training_curves(
            runs, tmp_path / "curves.png", keys=("loss", "accuracy"), smooth=3
        )
    )
    _check_png(plots.plot_training_curves(list(runs.values()), tmp_path / "c2.png"))
    _check_png(
        plots.plot_subset_heatmap(
            {"ova_ib": {"a": 0.9, "b": 0.5, "a+b": 0.95}, "clip": {"a": 0.8, "a+b": 0.9}},
            tmp_path / "heat.png",
            scale=100,
        )
    )
    _check_png(
        plots.plot_retrieval_bars(
            {
                "ova_ib": {"R@1": [0.3, 0.32], "mAP": [0.30, 0.31]},
                "clip": {"R@1": 0.28, "mAP": 0.29},
            },
            tmp_path / "bars.png",
        )
    )
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 50, 8))
    _check_png(
        plots.plot_embedding_pca(
            z,
            rng.integers(0, 3, 50),
            tmp_path / "sub" / "pca.png",
            modality_names=("a", "b", "c"),
            max_points=30,
        )
    )
    _check_png(plots.plot_embedding_pca(z[0], None, tmp_path / "pca1.png"))
    for p in tmp_path.rglob("*.png"):
        assert p.stat().st_size > 1000


def test_pca_2d_recovers_a_plane():
    rng = np.random.default_rng(0)
    # exactly centred, uncorrelated coordinates with variances 25 and 4: PC 1 and PC 2
    raw = rng.normal(size=(100, 2))
    coords = np.linalg.qr(raw - raw.mean(0))[0] * np.sqrt(100) * np.array([5.0, 2.0])
    basis = np.linalg.qr(rng.normal(size=(10, 2)))[0]  # orthonormal columns
    x = coords @ basis.T + 3.0
    p = plots.pca_2d(x)
    assert p.shape == (100, 2)
    np.testing.assert_allclose(np.abs(p), np.abs(coords), atol=1e-8)
    np.testing.assert_allclose(np.var(p, axis=0).sum(), np.var(coords, axis=0).sum(), rtol=1e-6)
