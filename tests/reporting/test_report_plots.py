"""Markdown report helpers and PNG plots."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ovaib_jax.reporting import plots, report

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


def test_seeds_table_per_column_options():
    results = {"a": {"acc": [0.9, 0.8], "mse": [0.2, 0.4]}, "b": {"acc": [0.7], "mse": [0.1]}}
    table = report.seeds_table(
        results,
        scale={"acc": 100.0},
        digits={"acc": 1, "mse": 3},
        best={"acc": "max", "mse": "min"},
    )
    assert table.splitlines()[2] == "| a | **85.0 ± 7.1** | 0.300 ± 0.141 |"
    assert table.splitlines()[3] == "| b | 70.0 (n=1) | **0.100** (n=1) |"  # a seed short
    with pytest.raises(ValueError, match="best must be"):
        report.seeds_table(results, best={"acc": "top"})


def _fake_results(obj_shift: float, k: int) -> dict:
    """A results.json of a 2-modality run (the k-th seed) with every evaluator the sweep
    reports."""
    s = obj_shift + 0.01 * k
    return {
        "step": 10,
        "downstream": {
            "label/accuracy": 0.8 + s,
            "label/loss": 0.5,
            "pos/mse": 0.1 - s / 10,
            "nuis/a/r2": 0.3 + s,
            "nuis/b/r2": 0.1,
            "nuis/mean/r2": 0.2 + s / 2,
            "linear/label/accuracy": 0.7 + s,
            "linear/pos/mse": 0.2,
            "linear/pos/r2": 0.5,  # not a per-modality target
            "linear_few10/label/accuracy": 0.4 + s,
        },
        "modality_subsets": {
            "a/label/accuracy": 0.6 + s,
            "b/label/accuracy": 0.5,
            "a+b/label/accuracy": 0.8 + s,
            "a+b/pos/mse": 0.2,
            "a/pos/mse": 0.3,
            "table": "| ... |",
        },
        "retrieval": {
            "a->b/R@1": 0.1 + s,
            "a->b/R@5": 0.3,
            "a->b/R@10": 0.5,
            "a->b/mAP": 0.2 + s,
            "a->b/median_rank": 7.0 - k,
            "a->b/mean_rank": 9.0,
            "R@1": 0.1 + s,
            "mAP": 0.2 + s,
            "num_candidates": 100,
            "table": "| ... |",
        },
        "mi_bounds": {
            "ova_mi_bound/a": 1.0 + s,
            "ova_mi_bound/b": 1.5,
            "ova_mi_bound/mean": 1.2,
            "mi_bound/mean": 2.0,
            "log_n": 4.0,
            "loss": 3.0,
        },
    }


def _runs():
    runs = []
    for k, seed in enumerate((42, 0)):
        for obj, shift in (("ova_ib", 0.1), ("clip", 0.0)):
            runs.append(
                report.RunRecord(obj, seed, f"/r/{obj}/{seed}", _fake_results(shift, k), 60.0)
            )
    runs.append(report.RunRecord("gram", 42, "/r/gram/42", None, 5.0, "failed", "Non-finite"))
    return runs


def test_sweep_tables_layout_and_numbers():
    runs = _runs()
    per_obj = report.per_objective(runs)
    assert list(per_obj) == ["ova_ib", "clip", "gram"] and per_obj["gram"] == []
    assert report.flatten_results(runs[0].results)["downstream/label/accuracy"] == 0.9
    assert "downstream/table" not in report.flatten_results({"downstream": {"table": "x"}})
    summary = report.summarize(per_obj)
    acc = summary["ova_ib"]["downstream/label/accuracy"]
    assert acc["values"] == pytest.approx([0.9, 0.91]) and acc["n"] == 2
    assert acc["std"] == pytest.approx(np.std(acc["values"], ddof=1))

    main = report.downstream_table(per_obj).splitlines()
    assert main[0] == "| objective | label acc. (%) | pos MSE |"
    assert main[2] == "| ova_ib | **90.50 ± 0.71** | **0.0895 ± 0.0007** |"
    assert main[3] == "| clip | 80.50 ± 0.71 | 0.0995 ± 0.0007 |"
    assert main[4] == "| gram | - | - |"

    linear = report.downstream_table(per_obj, probe="linear").splitlines()
    assert linear[0] == "| objective | label acc. (%) | pos MSE |"
    assert linear[2].startswith("| ova_ib | **80.50 ± 0.71** |")
    few = report.downstream_table(per_obj, probe="linear_few10").splitlines()
    assert few[0] == "| objective | label acc. (%) |" and few[3] == "| clip | 40.50 ± 0.71 |"
    assert report.extra_probes(per_obj) == ["linear", "linear_few10"]

    (nuis,) = report.per_modality_tables(per_obj).values()
    assert nuis.splitlines()[0] == "| objective | a | b | mean |" and "**" not in nuis

    subsets = report.subsets_tables(per_obj)
    assert list(subsets) == ["label acc. (%)", "pos MSE"]
    assert subsets["label acc. (%)"].splitlines()[0] == "| objective | a | b | a+b |"
    assert subsets["pos MSE"].splitlines()[0] == "| objective | a | a+b |"

    (ret,) = report.retrieval_tables(per_obj).values()
    lines = ret.splitlines()
    assert lines[0] == "| objective | R@1 | R@5 | R@10 | mAP | median_rank |"
    assert lines[2].split(" | ")[1].startswith("**")  # ova_ib's higher R@1
    assert lines[2].endswith("| **6.5 ± 0.7** |") and lines[3].endswith("| **6.5 ± 0.7** |")

    mi = report.mi_bounds_table(per_obj).splitlines()
    assert mi[0] == "| objective | OVA a | OVA b | OVA mean | own mean | log N |"

    wall = report.wall_time_table(runs).splitlines()
    assert wall[0] == "| objective | seed 42 | seed 0 | mean |"
    assert wall[2] == "| ova_ib | 1.00 | 1.00 | 1.00 ± 0.00 |" and wall[4].startswith(
        "| gram | 0.08 | - |"
    )


def _on_embeddings(run):
    """``run`` as ``downstream`` with ``features="embedding"`` reports it: every key of
    its downstream results under ``embedding/``."""
    if run.results is None:
        return run
    downstream = {f"embedding/{k}": v for k, v in run.results["downstream"].items()}
    return dataclasses.replace(run, results={**run.results, "downstream": downstream})


_ON_Z = {
    "Downstream probe on all modalities (test split)":
        "Downstream probe on all modalities' embeddings z (test split)",
    "Linear probe on all modalities (test split)":
        "Linear probe on all modalities' embeddings z (test split)",
    "Linear probe, 10 labels per class, on all modalities (test split)":
        "Linear probe, 10 labels per class, on all modalities' embeddings z (test split)",
    "Decoding each modality's own `nuis` from its representation (R²)":
        "Decoding each modality's own `nuis` from its embedding z (R²)",
}  # fmt: skip


def test_probes_of_the_embeddings_get_the_same_tables():
    """``downstream`` with ``features="embedding"`` prefixes its keys with ``embedding/``:
    the report shows them in the main, extra-probe and per-modality tables, titled for the
    embeddings (they had been read as a per-modality target called "embedding", and the
    main table was gone), and their accuracies in the paired table."""
    plain = _runs()
    want = report.sweep_tables(plain)
    got = report.sweep_tables([_on_embeddings(r) for r in plain])
    assert list(got) == [_ON_Z.get(k, k) for k in want]
    (paired,) = (t for t in want if t.startswith("Paired"))
    for title, table in want.items():
        if title != paired:
            assert got[_ON_Z.get(title, title)] == table, title
    assert got[paired].replace("downstream/embedding/", "downstream/") == want[paired]
    assert list(report.downstream_features(report.per_objective(plain))) == ["representation"]


def test_runs_probed_on_both_features_get_both_sets_of_tables():
    """A sweep rerun with the other ``features`` keeps its finished runs' keys: each
    objective's probes show in the tables of what they read ("-" in the other), none is
    lost or read as a per-modality target "embedding"."""
    plain = _runs()
    mixed = [_on_embeddings(r) if r.objective == "clip" else r for r in plain]
    tables = report.sweep_tables(mixed)
    main = tables["Downstream probe on all modalities (test split)"].splitlines()
    assert main[2] == "| ova_ib | **90.50 ± 0.71** | **0.0895 ± 0.0007** |"
    assert main[3] == "| clip | - | - |"
    on_z = tables["Downstream probe on all modalities' embeddings z (test split)"].splitlines()
    assert on_z[2] == "| ova_ib | - | - |"
    assert on_z[3] == "| clip | **80.50 ± 0.71** | **0.0995 ± 0.0007** |"
    assert not [t for t in tables if "`embedding`" in t]
    assert len([t for t in tables if t.startswith("Decoding each modality's own `nuis`")]) == 2


def test_sweep_report_markdown_and_json():
    runs = _runs()
    md, summary = report.sweep_report(
        runs,
        title="experiments/x.py",
        command="python -m ovaib_jax.sweep --config=experiments/x.py",
        figures={"curves": "curves.png"},
        notes=["`--config.objective.tau` does not apply to symile."],
    )
    assert md.startswith("# Sweep: experiments/x.py\n")
    assert "python -m ovaib_jax.sweep --config=experiments/x.py" in md
    for section in (
        "## Downstream probe on all modalities (test split)",
        "## Linear probe on all modalities (test split)",
        "## Linear probe, 10 labels per class, on all modalities (test split)",
        "## Decoding each modality's own `nuis` from its representation (R²)",
        "## Modality subsets: label acc. (%)",
        "## Modality subsets: pos MSE",
        "## Retrieval a->b",
        "## Mutual-information lower bounds (nats, test split)",
        "## Wall time per run (minutes)",
        "## Failed runs",
    ):
        assert section in md, section
    assert "![curves](curves.png)" in md and "does not apply to symile" in md
    assert "* gram, seed 42: Non-finite" in md
    assert summary["objectives"] == ["ova_ib", "clip", "gram"] and summary["seeds"] == [42, 0]
    assert [r["finished"] for r in summary["runs"]] == [True] * 4 + [False]
    assert "results" not in summary["runs"][0]
    # Each run's metrics, by seed (summary's per-metric values lists are not).
    by_run = {(r["objective"], r["seed"]): r["metrics"] for r in summary["runs"]}
    assert by_run["clip", 0]["downstream/label/accuracy"] == pytest.approx(0.81)
    assert by_run["ova_ib", 42]["retrieval/a->b/median_rank"] == 7.0
    assert by_run["gram", 42] is None
    json.dumps(summary)  # JSON-able


def test_grouped_training_curves_and_sweep_figures(tmp_path):
    runs = []
    for obj in ("ova_ib", "clip"):
        for seed in (42, 0):
            d = tmp_path / obj / str(seed)
            d.mkdir(parents=True)
            with open(d / "metrics.jsonl", "w") as f:
                for step in range(5, 101, 5):
                    rec = {"step": step, "train/loss": 1.0 / step + seed, "train/accuracy": 0.5}
                    f.write(json.dumps(rec) + "\n")
            runs.append(
                report.RunRecord(obj, seed, str(d), _fake_results(0.1 * (obj == "clip"), 1), 1)
            )
    _check_png(
        plots.plot_training_curves(
            {
                o: [r.workdir + "/metrics.jsonl" for r in runs if r.objective == o]
                for o in ("ova_ib",)
            },
            tmp_path / "grouped.png",
            keys=("train/loss",),
        )
    )
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 40, 4))
    figures = plots.sweep_figures(
        runs, tmp_path / "out", embeddings={"ova_ib": (z, rng.integers(0, 2, 40), ("a", "b"))}
    )
    assert sorted(figures.values()) == [
        "curves.png",
        "pca_ova_ib.png",
        "retrieval_a_to_b.png",
        "subsets_label.png",
        "subsets_pos.png",
    ]
    for name in figures.values():
        _check_png(tmp_path / "out" / name)


def test_paired_table_differences_intervals_and_verdicts():
    """ova_ib beats clip by exactly 0.1 on every seed (a point interval), ties gram (+-0.05
    around 0: the t interval +-4.303 * 0.05 / sqrt(3)), and a seed only one objective ran
    is left out of the pairs."""
    acc = {"ova_ib": (0.9, 0.8, 0.7), "clip": (0.8, 0.7, 0.6), "gram": (0.95, 0.75, 0.7)}
    runs = [
        report.RunRecord(obj, seed, f"/r/{obj}/{seed}",
                         {"downstream": {"label/accuracy": a}, "retrieval": {"R@1": 0.5}}, 1.0)
        for obj, values in acc.items()
        for seed, a in zip((42, 0, 1), values)
    ]  # fmt: skip
    only_clip = {"downstream": {"label/accuracy": 0.0}}
    runs.append(report.RunRecord("clip", 7, "/r/clip/7", only_clip, 1.0))
    lines = report.paired_table(runs).splitlines()
    head = "| metric | objective | ova_ib - objective [95 % t interval] | verdict | seeds |"
    assert lines[0] == head
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in lines[2:]}
    clip = rows[("downstream/label/accuracy", "clip")]
    assert "+0.1000 [+0.1000, +0.1000]" in clip and "ova_ib better" in clip
    assert clip.endswith("| 3 |")
    gram = rows[("downstream/label/accuracy", "gram")]  # differences -0.05, +0.05, 0
    assert "+0.0000 [-0.1242, +0.1242]" in gram and "| tie |" in gram
    assert "| tie |" in rows[("retrieval/R@1", "clip")]  # equal values: a zero interval
    assert report.paired_table(runs[:3]) is None  # one objective
    md = report.sweep_tables(runs)
    assert "Paired differences against ova_ib (t interval over seeds)" in md


def test_the_trainer_and_evaluate_start_without_matplotlib():
    """matplotlib (about 0.4 s of a start) is imported by the first figure, not by the
    CLIs that never draw (the evaluators import this package for its tables)."""
    import subprocess
    import sys

    code = (
        "import sys, ovaib_jax.main, ovaib_jax.evaluate, ovaib_jax.reporting; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at start'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cells_of_fewer_seeds_say_so():
    """A row with a seed missing (failed, or busy in another process) was averaged over
    fewer seeds than the header named, with nothing in the table saying so: a 2-seed
    mean could take the bold from a 3-seed one."""
    table = report.seeds_table(
        {"ova_ib": {"acc": [0.9, 0.8, 0.7]}, "clip": {"acc": [0.86, 0.84]}}, scale=100, best="max"
    ).splitlines()
    assert table[2:] == ["| ova_ib | 80.00 ± 10.00 |", "| clip | **85.00 ± 1.41** (n=2) |"]
    runs = [r for r in _runs() if r.objective != "gram"]
    runs.append(report.RunRecord("ova_ib", 1, "/r/ova_ib/1", _fake_results(0.1, 1), 60.0))
    md, _ = report.sweep_report(runs, title="t", command="c")
    assert "Not every run finished (seeds finished: ova_ib 3, clip 2, of 3)" in md
    assert "(n=2)" in md
    full, _ = report.sweep_report(_runs()[:4], title="t", command="c")
    assert "(n=" not in full and "Not every run finished" not in full
    runs = _runs()[:4]
    runs[1].other_evaluation = ("evaluator_kwargs.retrieval.candidate_targets",)
    md, summary = report.sweep_report(runs, title="t", command="c")
    assert (
        "Evaluated with other settings than this command's, which their results keep (re-"
        "evaluate them with python -m ovaib_jax.evaluate --set=...): clip seed 42 "
        "(evaluator_kwargs.retrieval.candidate_targets)." in md
    )
    assert summary["runs"][1]["other_evaluation"] == (
        "evaluator_kwargs.retrieval.candidate_targets",
    )


def test_pca_classes_get_distinct_colours_and_curves_leave_out_unfinished_runs(
    tmp_path, monkeypatch
):
    """tab10 reused its colours past 10 classes (parity's 16 labels shared 6 pairs); a
    diverged run's metrics cut every objective's curve to the steps it logged, or made
    its mean NaN."""
    from matplotlib import colormaps

    labels = np.repeat(np.arange(16), 3)
    index, style = plots._label_colours(labels)
    colours = {style["scatter"]["cmap"](style["scatter"]["norm"](i)) for i in range(16)}
    assert len(colours) == 16 and style["ticklabels"] == [str(i) for i in range(16)]
    np.testing.assert_array_equal(index, labels)
    index, style = plots._label_colours(np.array([3, 7, 3]))  # classes in order, 2 colours
    np.testing.assert_array_equal(index, [0, 1, 0])
    assert style["scatter"]["cmap"].colors == [colormaps["tab10"](i) for i in range(2)]

    runs = []
    for seed, results, last in ((42, _fake_results(0.0, 0), 100), (0, None, 30)):
        d = tmp_path / str(seed)
        d.mkdir()
        with open(d / "metrics.jsonl", "w") as f:
            for step in range(10, last + 1, 10):
                loss = float("nan") if results is None and step == last else 1.0 / step
                f.write(json.dumps({"step": step, "train/loss": loss}) + "\n")
        runs.append(report.RunRecord("ova_ib", seed, str(d), results, 1.0))
    seen = {}
    monkeypatch.setattr(
        plots, "plot_training_curves", lambda metrics, *a, **k: seen.update(metrics)
    )
    plots.sweep_figures(runs, tmp_path / "out")
    assert seen == {"ova_ib": [plots.paths.join(str(tmp_path / "42"), plots.METRICS_FILE)]}
