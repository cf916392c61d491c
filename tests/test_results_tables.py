"""scripts/results_tables.py: the tables of docs/RESULTS.md from sweep run directories."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tests.train_helpers import ROOT


def _module(name: str = "results_tables"):
    """scripts/NAME.py as a module."""
    path = os.path.join(ROOT, "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(root, sweep, objective, seed, results, evaluated=None, wall=10.0):
    d = os.path.join(root, sweep, objective, f"seed_{seed}")
    os.makedirs(os.path.join(d, "eval"))
    json.dump(results, open(os.path.join(d, "results.json"), "w"))
    json.dump({"wall_time_s": wall}, open(os.path.join(d, "sweep_run.json"), "w"))
    if evaluated is not None:
        json.dump(evaluated, open(os.path.join(d, "eval", "results.json"), "w"))


def test_tables_are_mean_and_sample_std_over_seeds(tmp_path):
    rt = _module()
    root = str(tmp_path)
    subsets = {"a/label/accuracy": 0.5, "b/label/accuracy": 0.7, "a+b/label/accuracy": 0.9}
    _run(
        root,
        "s",
        "ova_ib",
        0,
        {"retrieval": {"R@1": 0.2}, "modality_subsets": subsets},
        {"downstream": {"x": 1.0}},
        wall=10.0,
    )
    _run(
        root, "s", "ova_ib", 1, {"retrieval": {"R@1": 0.6}, "modality_subsets": subsets}, wall=30.0
    )
    table = rt.Table(
        "t",
        (rt.Row("ova", "s", "ova_ib"), rt.Row("sym", "s", "symile")),
        (
            ("R@1", "retrieval/R@1"),
            ("one view", "subset_size:1"),
            ("two", "subset_size:2"),
            ("later", "eval:downstream/x"),
            ("ratio", "ratio:eval:downstream/x|retrieval/R@1"),
        ),
    )
    text, raw = rt.render(table, root)
    lines = text.splitlines()
    std = np.std([0.2, 0.6], ddof=1)
    assert f"| ova | 0.400 ± {std:.3f} | 0.600 ± 0.000 | 0.900 ± 0.000 |" in lines[4]
    assert "| 1.000 ± 0.000 (1 seeds) |" in lines[4] and lines[4].endswith("| 0,1 | 20 |")
    assert "| 5.000 ± 0.000 (1 seeds) |" in lines[4]  # 1.0 / 0.2, seed 0 only
    assert lines[5].startswith("| sym | not run")
    assert raw["ova"]["R@1"] == [0.2, 0.6]

    doc = tmp_path / "doc.md"
    doc.write_text(
        "a\n<!-- table: t -->\nold\n<!-- end table -->\nb\n<!-- table: u -->\nx\n"
        "<!-- end table -->\n"
    )
    rt.update_markdown(str(doc), {"t": text})
    new = doc.read_text()
    assert "old" not in new and text in new and "<!-- table: u -->\nx\n" in new


def test_comparison_pairs_seeds_and_prints_the_paired_interval(tmp_path):
    """A beats B by exactly 0.1 on the three seeds both ran (a point interval); B's extra
    seed is not paired; a metric only one side has is "not run"."""
    rt = _module()
    root = str(tmp_path)
    for seed, (a, b) in zip((42, 0, 1), ((0.9, 0.8), (0.7, 0.6), (0.5, 0.4))):
        _run(root, "s", "ova_ib", seed, {"downstream": {"label/accuracy": a}})
        _run(root, "s", "comm", seed, {"downstream": {"label/accuracy": b}})
    _run(root, "s", "comm", 7, {"downstream": {"label/accuracy": 0.0}})
    comp = rt.Comparison(
        "t",
        rt.Row("ova_ib", "s", "ova_ib"),
        rt.Row("comm", "s", "comm"),
        (("acc", "downstream/label/accuracy"), ("R@1", "retrieval/R@1")),
    )
    text, raw = rt.render_comparison(comp, root)
    lines = text.splitlines()
    assert lines[4] == (
        "| acc | 0.700 ± 0.200 | 0.600 ± 0.200 | +0.100 [+0.100, +0.100] | A better | 3 |"
    )
    assert lines[5] == "| R@1 | not run | not run | not run | not run | 0 |"
    assert raw["acc"]["a"] == [0.7, 0.5, 0.9]  # seeds 0, 1, 42 (sorted directory names)
    assert lines[-1].endswith("paired by seed (0, 1, 42).")


def test_against_best_picks_the_best_other_per_metric(tmp_path):
    """Per metric the other with the highest mean is the reference: on "acc" B (0.8 mean)
    beats C and the candidate is exactly 0.1 below it; on "r" C is best and the
    candidate ties it (differences +0.1, -0.1, 0)."""
    rt = _module()
    root = str(tmp_path)
    cand = {"acc": (0.7, 0.6, 0.8), "r": (0.5, 0.3, 0.4)}
    b = {"acc": (0.8, 0.7, 0.9), "r": (0.1, 0.1, 0.1)}
    c = {"acc": (0.1, 0.1, 0.1), "r": (0.4, 0.4, 0.4)}
    cand["own"] = (1.0, 1.0, 1.0)  # only the candidate has it: nothing to pair with
    for i, seed in enumerate((0, 1, 2)):
        for obj, vals in (("cand", cand), ("b", b), ("c", c)):
            _run(root, "s", obj, seed, {"downstream": {k: v[i] for k, v in vals.items()}})
    item = rt.AgainstBest(
        "t",
        rt.Row("cand", "s", "cand"),
        (rt.Row("B", "s", "b"), rt.Row("C", "s", "c")),
        (
            ("acc", "downstream/acc"),
            ("r", "downstream/r"),
            ("none", "downstream/none"),
            ("own", "downstream/own"),
        ),
    )
    text, raw = rt.render_against_best(item, root)
    lines = text.splitlines()
    assert lines[4].startswith("| acc | B | 0.800 ± 0.100 | 0.700 ± 0.100 | -0.100 [-0.100, -0.100")
    assert lines[4].endswith("| below the best | 3 |")
    assert lines[5].startswith("| r | C | 0.400 ± 0.000 | 0.400 ± 0.100 |")
    assert lines[5].endswith("| tie with the best | 3 |")
    assert lines[6] == "| none | not run | not run | not run | not run | not run | - |"
    assert lines[7] == "| own | - | - | - | - | needs 2+ paired seeds | - |"
    assert raw["r"]["best"] == "C" and np.isclose(raw["acc"]["diff"]["mean"], -0.1)


def test_last_fifth_fall_reads_the_logged_curve(tmp_path):
    """Held-out loss 4.0 at step 1200 (0.8 of 1500) and 3.0 at 1500: a fall of 0.25; a
    step logged twice (a resume) counts its last value; too short a curve gives None."""
    rt = _module()
    run = tmp_path / "run"
    run.mkdir()
    key = "eval/heldout_loss/loss"
    lines = [
        {"step": 300, key: 5.0},
        {"step": 1200, key: 9.0},
        {"step": 1300, "train/loss": 1.0},
        {"step": 1200, key: 4.0},
        {"step": 1500, key: 3.0},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert rt._lookup(str(run), "fifth:" + key) == 0.25
    assert rt._lookup(str(run), "fifth:train/loss") is None  # one step only
    assert rt._lookup(str(tmp_path), "fifth:" + key) is None  # no metrics.jsonl


def test_retention_tests_the_candidate_against_a_fraction_of_the_reference(tmp_path):
    """Reference 1.0, 0.8, 0.6; candidate exactly 0.5 x it on "low" (fails 95 %), exactly
    it on "same" (keeps: cand - 0.95 ref = 0.05 x ref > 0 on every seed)."""
    rt = _module()
    root = str(tmp_path)
    for seed, ref in zip((0, 1, 2), (1.0, 0.8, 0.6)):
        _run(root, "s", "ova_ib", seed, {"retrieval": {"low": ref, "same": ref}})
        _run(root, "s", "cand", seed, {"retrieval": {"low": 0.5 * ref, "same": ref}})
    item = rt.Retention(
        "t",
        rt.Row("cand", "s", "cand"),
        rt.Row("ref", "s", "ova_ib"),
        (("low", "retrieval/low"), ("same", "retrieval/same"), ("x", "retrieval/x")),
    )
    text, raw = rt.render_retention(item, root)
    lines = text.splitlines()
    assert lines[4].startswith("| low | 0.800 ± 0.200 | 0.400 ± 0.100 | 0.50 | -0.360 [")
    assert lines[4].endswith("| fails | 3 |")
    assert lines[5].startswith("| same | 0.800 ± 0.200 | 0.800 ± 0.200 | 1.00 | +0.040 [")
    assert lines[5].endswith("| keeps | 3 |")
    assert lines[6] == "| x | not run | not run | not run | not run | not run | 0 |"
    assert np.isclose(raw["low"]["ratio"], 0.5)


def test_update_leaves_tables_without_any_run_as_they_are(tmp_path, monkeypatch, capsys):
    """``--update`` with a ``--root`` that lacks a table's runs keeps the published table
    (it used to overwrite it with "not run"); a table with runs there is rewritten."""
    rt = _module()
    title = "parity M = 4, p = 1 (chance R@1 = 0.25)"
    assert any(t.title == title for t in rt.TABLES)
    doc = tmp_path / "doc.md"
    published = f"<!-- table: {title} -->\n| published |\n<!-- end table -->\n"
    doc.write_text(published)
    argv = ["results_tables.py", f"--root={tmp_path / 'empty'}", f"--only={title}"]
    monkeypatch.setattr(sys, "argv", [*argv, f"--update={doc}"])
    rt.main()
    assert doc.read_text() == published
    assert "not run" in capsys.readouterr().out  # still printed
    _run(str(tmp_path / "runs"), "parity_m4", "ova_ib", 0, {"retrieval": {"R@1": 0.5}})
    argv[1] = f"--root={tmp_path / 'runs'}"
    monkeypatch.setattr(sys, "argv", [*argv, f"--update={doc}"])
    rt.main()
    assert "| published |" not in doc.read_text() and "| ova_ib |" in doc.read_text()


def test_score_weight_choice_is_the_best_mean_of_map_and_colour_r1():
    sw = _module("score_weight")

    def entry(shape_map, colour_r1):
        return {"shape": {"mAP": shape_map}, "colour": {"R@1": colour_r1}}

    # means: w=1 0.55, w=0.1 0.6375, w=0.03 0.6445, w=0 0.4835 (the colour R@1 collapses)
    select = {
        "1": entry(0.443, 0.657),
        "0.1": entry(0.587, 0.688),
        "0.03": entry(0.610, 0.679),
        "0": entry(0.615, 0.352),
    }
    assert sw.choose(select) == "0.03"
    # a tie of the mean goes to the larger weight (the one closer to training's)
    assert (
        sw.choose({"0.1": entry(0.6, 0.6), "0.3": entry(0.5, 0.7), "0": entry(0.7, 0.5)}) == "0.3"
    )
    # A NaN score compared False: "1" won or lost by the order of the weights.
    with pytest.raises(ValueError, match=r"no finite retrieval score at weight\(s\) \['1'\]"):
        sw.choose({"1": entry(float("nan"), 0.5), "0.3": entry(0.75, 0.75)})
    with pytest.raises(sw.app.UsageError, match="local run directories"):
        sw.main(["score_weight.py", "gs://bucket/res/sweep/ova_ib_heads/seed_0"])


def test_score_weight_derived_run_sits_beside_the_sweep():
    sw = _module("score_weight")
    got = sw.derived_dir("/r/trifeature_m4_branches/ova_ib_heads/seed_3/")
    assert got == "/r/trifeature_m4_branches_score_weight/ova_ib_heads/seed_3"


def test_score_weight_end_to_end_on_a_tiny_trifeature_run(tmp_path):
    """score_weight on a trained (tiny) run of the separate encoders: at the weight the
    run was trained with, its test retrieval equals the trainer's own final evaluation;
    the weight chosen is the best on the selection split by the rule of ``choose``; the
    derived run holds the test retrieval of that weight and nothing of the other runs'."""
    from ovaib_jax import records, train
    from tests.train_helpers import tiny_config

    sw = _module("score_weight")
    config = tiny_config(
        str(tmp_path / "data"),
        name="trifeature",
        arg="M=3,beta=0,objective=ova_ib_heads,runlocal",
        **{"dataset.config.num_train": 96, "dataset.config.num_test": 48},
    )
    config.model.branches = "4,2,2"
    config.final_evaluators = "retrieval"
    run = str(tmp_path / "sweep" / "ova_ib_heads" / "seed_42")
    train.train_and_evaluate(config, run)
    own = records.read_results(run)["retrieval"]
    records.write_json(os.path.join(run, "sweep_run.json"), {"wall_time_s": 12.5})  # the sweep's

    summary = sw.score_weight(run, weights=("1", "0"), select_split="train[:32]")
    trained = summary["trained_product_weight"]
    assert trained == config.objective.product_weight == 1.0
    for k in sw.METRICS:
        assert summary["test"]["1"]["shape"][k] == own[k], k
    # the choice follows the rule on the selection split alone
    merit = {w: (r["shape"]["mAP"] + r["colour"]["R@1"]) / 2 for w, r in summary["select"].items()}
    best = max(merit.values())
    assert summary["chosen"] == max((w for w in merit if merit[w] == best), key=float)
    derived = sw.derived_dir(run)
    assert derived == str(tmp_path / "sweep_score_weight" / "ova_ib_heads" / "seed_42")
    got = records.read_results(derived)["retrieval"]
    want = summary["test"][summary["chosen"]]["shape"]
    assert {k: got[k] for k in sw.METRICS} == want
    colour = records.read_json(os.path.join(derived, "eval", "results.json"))["retrieval"]
    assert {k: colour[k] for k in sw.METRICS} == summary["test"][summary["chosen"]]["colour"]
    assert records.read_json(os.path.join(derived, "score_weight.json")) == summary
    assert os.path.exists(os.path.join(derived, "config.json"))
    assert records.read_json(os.path.join(derived, "sweep_run.json")) == {"wall_time_s": 12.5}
    assert summary["seconds"] > 0


def test_archive_gives_back_every_published_value_and_takes_new_seeds(tmp_path, monkeypatch):
    """A table, a comparison and a row published only in a comparison, rendered from run
    directories and written with --json, render the same from that JSON alone; a new seed
    (or row) under --root joins the archived ones, and the result equals rendering with
    every run directory present. --update rewrites only tables with a run directory."""
    rt = _module()
    full, fresh = str(tmp_path / "full"), str(tmp_path / "fresh")
    metrics = (("acc", "downstream/acc"), ("R@1 both", "eval:retrieval/R@1"))
    rng = np.random.default_rng(0)
    for root in (full, fresh):
        seeds = (0, 1, 42) if root == full else ()
        for seed in (*seeds, 7):
            for obj, sweep in (("a", "s"), ("b", "s"), ("c", "s_control")):
                res = {"downstream": {"acc": float(rng.random())}}
                ev = {"retrieval": {"R@1": float(rng.random())}} if seed != 1 else None
                if root == fresh:  # seed 7 must match what the full root holds
                    res = json.load(open(os.path.join(full, sweep, obj, "seed_7", "results.json")))
                    ev_path = os.path.join(full, sweep, obj, "seed_7", "eval", "results.json")
                    ev = json.load(open(ev_path))
                _run(root, sweep, obj, seed, res, ev, wall=10.0 * (seed + 1))
    table = rt.Table("t", (rt.Row("A", "s", "a"), rt.Row("B", "s", "b")), metrics)
    comps = (
        rt.Comparison("t: A against B", table.rows[0], table.rows[1], metrics),
        rt.Comparison("t: control", rt.Row("C", "s_control", "c"), table.rows[0], metrics),
    )
    monkeypatch.setattr(rt, "TABLES", [table])
    monkeypatch.setattr(rt, "COMPARISONS", list(comps))
    monkeypatch.setattr(rt, "AGAINST_BEST", [])
    monkeypatch.setattr(rt, "RETENTION", [])

    # the published state: seeds 0, 1, 42 only
    published = str(tmp_path / "published")
    for sweep, obj in (("s", "a"), ("s", "b"), ("s_control", "c")):
        for seed in (0, 1, 42):
            src = os.path.join(full, sweep, obj, f"seed_{seed}")
            dst = os.path.join(published, sweep, obj, f"seed_{seed}")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink(src, dst)
    archive = str(tmp_path / "tables.json")
    monkeypatch.setattr(sys, "argv", ["rt", f"--root={published}", f"--json={archive}"])
    rt.main()
    entry = json.load(open(archive))["t"]["A"]
    assert entry["seeds"] == ["0", "1", "42"] and entry["wall s/run"] == [10.0, 20.0, 430.0]
    assert entry["R@1 both"][1] is None  # seed 1 has no eval: null, in seed order

    source = rt.Source(str(tmp_path / "nothing"), rt.load_archive([archive]))
    assert rt.render(table, source)[0] == rt.render(table, published)[0]
    for comp in comps:
        assert rt.render_comparison(comp, source)[0] == rt.render_comparison(comp, published)[0]

    # seed 7 newly run: archive + fresh root == every run directory
    source = rt.Source(fresh, rt.load_archive([archive]))
    assert rt.render(table, source)[0] == rt.render(table, full)[0]
    assert "| 0,1,42,7 |" in rt.render(table, source)[0]
    for comp in comps:
        assert rt.render_comparison(comp, source)[0] == rt.render_comparison(comp, full)[0]
    assert rt.has_runs(table, source)
    assert not rt.has_runs(table, rt.Source(str(tmp_path / "nothing"), source.archive))


def test_archive_without_seeds_is_one_clear_error(tmp_path, monkeypatch):
    rt = _module()
    table = rt.Table("t", (rt.Row("A", "s", "a"),), (("acc", "downstream/acc"),))
    monkeypatch.setattr(rt, "TABLES", [table])
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"t": {"A": {"acc": [0.5, 0.6]}}}))
    try:
        rt.load_archive([str(old)])
    except ValueError as e:
        assert "has no 'seeds'" in str(e) and "regenerate it with --json" in str(e)
    else:
        raise AssertionError("an archive without seeds was read")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"t": {"A": {"acc": [0.5], "seeds": ["0", "1"]}}}))
    try:
        rt.load_archive([str(bad)])
    except ValueError as e:
        assert "1 values for 2 seeds" in str(e)
    else:
        raise AssertionError("misaligned values were read")


def test_published_tables_render_from_their_archive():
    """Every table of docs/RESULTS.md (tables, comparisons, candidates against the best,
    retention tests) renders, from the JSON archives in docs/results alone, exactly as
    published: values, seeds, intervals and wall times."""
    import re

    rt = _module()
    names = ("", "_tau0.01", "_symile_stable", "_trifeature", "_retention")
    paths = [os.path.join(ROOT, "docs", "results", f"tables{n}.json") for n in names]
    source = rt.Source("/nonexistent", rt.load_archive(paths))
    doc = open(os.path.join(ROOT, "docs/RESULTS.md")).read()
    items = [(t, rt.render) for t in rt.TABLES]
    items += [(c, rt.render_comparison) for c in rt.COMPARISONS]
    items += [(c, rt.render_against_best) for c in rt.AGAINST_BEST]
    items += [(c, rt.render_retention) for c in rt.RETENTION]
    titles = {item.title for item, _ in items}
    published = re.findall(r"<!-- table: (.+?) -->\n(.*?)\n<!-- end table -->", doc, re.S)
    assert len(published) >= 69
    for title, text in published:
        assert title in titles, title  # every published block is one of the script's
        item, render = next((i, r) for i, r in items if i.title == title)
        assert render(item, source)[0].strip() == text.strip(), title


def test_comparisons_use_the_t_interval_and_bootstrap_on_request(tmp_path, monkeypatch, capsys):
    """Three small same-sign differences (0.001, 0.05, 0.002) are a tie under the paired t
    interval (0.0177 +- 0.0697, the default) and "A better" under the percentile
    bootstrap (--interval bootstrap: [min, max] of the resampled means at 3 seeds)."""
    rt = _module()
    for seed, (a, d) in zip((0, 1, 2), ((0.5, 0.001), (0.6, 0.05), (0.7, 0.002))):
        for obj, v in (("a", a + d), ("b", a)):
            _run(str(tmp_path), "s", obj, seed, {"downstream": {"label/accuracy": v}})
    comp = rt.Comparison(
        "t", rt.Row("A", "s", "a"), rt.Row("B", "s", "b"), (("acc", "downstream/label/accuracy"),)
    )
    row = rt.render_comparison(comp, str(tmp_path))[0].splitlines()[4]
    assert row.split(" | ")[4] == "tie" and "+0.018 [-0.052, +0.087]" in row
    # --interval bootstrap, through the command line
    monkeypatch.setattr(rt, "PAIRED", rt.PAIRED)  # main rebinds it; restored after the test
    for name, items in (("TABLES", []), ("COMPARISONS", [comp]), ("AGAINST_BEST", []),
                        ("RETENTION", [])):  # fmt: skip
        monkeypatch.setattr(rt, name, items)
    monkeypatch.setattr(sys, "argv", ["rt", f"--root={tmp_path}", "--interval=bootstrap"])
    rt.main()
    row = capsys.readouterr().out.splitlines()[4]
    assert row.split(" | ")[4] == "A better"


def test_lower_is_better_metrics_get_the_right_verdict_and_best(tmp_path):
    """A nuisance (or style) R², an MSE and a rank are better lower: A keeping 0.4 more
    nuisance than B is "B better" (it had read "A better"), and the best other of an
    AgainstBest is the one with the lowest mean."""
    rt = _module()
    root = str(tmp_path)
    for seed, (a, b) in zip((0, 1, 2), ((0.90, 0.50), (0.91, 0.51), (0.92, 0.52))):
        for obj, v in (("a", a), ("b", b)):
            results = {"downstream": {"nuisance/mean/r2": v, "pos/mse": v, "label/accuracy": v}}
            _run(root, "s", obj, seed, results)
    comp = rt.Comparison(
        "t",
        rt.Row("A", "s", "a"),
        rt.Row("B", "s", "b"),
        (
            ("nuisance R²", "downstream/nuisance/mean/r2"),
            ("mse", "downstream/pos/mse"),
            ("acc", "downstream/label/accuracy"),
        ),
    )
    lines = rt.render_comparison(comp, root)[0].splitlines()
    assert [line.split(" | ")[4] for line in lines[4:7]] == ["B better", "B better", "A better"]
    item = rt.AgainstBest(
        "t", rt.Row("B", "s", "b"), (rt.Row("A", "s", "a"),), (("mse", "downstream/pos/mse"),)
    )
    assert rt.render_against_best(item, root)[0].splitlines()[4].endswith("| best | 3 |")
    assert rt.lower_is_better("retrieval/median_rank") and not rt.lower_is_better("retrieval/R@1")
