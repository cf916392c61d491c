"""The sweep CLI end to end on tiny parity runs, its resumption, its errors, and the
trainer's once-only final evaluation that it relies on."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import numpy as np
import pytest

from ovaib_jax import sweep, train
from tests.train_helpers import ROOT, TINY, cli_flags, run, subprocess_env, tiny_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OBJECTIVES = ("ova_ib", "pairwise_clip")
SEEDS = (42, 0)
# Tiny probes and MI batches on top of the tiny model and data of train_helpers.TINY.
TINY_EVAL = {
    **TINY,
    "eval_every_steps": 3,
    "evaluator_kwargs.downstream.hidden": (16,),
    "evaluator_kwargs.downstream.max_epochs": 2,
    "evaluator_kwargs.modality_subsets.hidden": (16,),
    "evaluator_kwargs.modality_subsets.max_epochs": 2,
    "evaluator_kwargs.mi_bounds.batch_size": 32,
}


def sweep_cmd(workdir: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ovaib_jax.sweep",
        f"--config={os.path.join(ROOT, 'experiments', 'parity.py')}:runlocal",
        f"--objectives={','.join(OBJECTIVES)}",
        f"--seeds={','.join(map(str, SEEDS))}",
        f"--workdir={workdir}",
        *cli_flags(TINY_EVAL),
    ]


def sweep_env(tmp_path) -> dict:
    env = subprocess_env(devices=1)
    env["OVAIB_DATA_DIR"] = str(tmp_path / "data")
    # Cache every compilation (not only those over 1 s): the second seed of an objective
    # and the rerun then compile nothing.
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _table(markdown: str, section: str) -> list[list[str]]:
    """The rows (cells) of the markdown table under ``## {section}``."""
    block = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def _mean_std(values):
    a = np.asarray(values, np.float64)
    return a.mean(), a.std(ddof=1)


def test_sweep_end_to_end_and_rerun(tmp_path):
    """2 objectives x 2 seeds: runs in DIR/<objective>/seed_<s>/, report.md and report.json
    with the paper's layout and the per-run results.json numbers, PNG figures; the same
    command again skips every finished run."""
    workdir = str(tmp_path / "sweep")
    cmd = sweep_cmd(workdir)
    env = sweep_env(tmp_path)
    proc = run(cmd, env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    results = {}
    for obj in OBJECTIVES:
        for seed in SEEDS:
            rundir = os.path.join(workdir, obj, f"seed_{seed}")
            results[obj, seed] = json.load(open(os.path.join(rundir, "results.json")))
            assert json.load(open(os.path.join(rundir, "config.json")))["seed"] == seed
            state = json.load(open(os.path.join(rundir, sweep.STATE_FILE)))
            assert state["status"] == "ok" and state["wall_time_s"] > 0
    assert set(results[OBJECTIVES[0], 42]) >= {
        "step",
        "downstream",
        "modality_subsets",
        "retrieval",
        "mi_bounds",
        "heldout_loss",
    }

    md = open(os.path.join(workdir, "report.md")).read()
    summary = json.load(open(os.path.join(workdir, "report.json")))
    assert "python -m ovaib_jax.sweep" in md and "--objectives=ova_ib,pairwise_clip" in md
    assert summary["command"].startswith("python -m ovaib_jax.sweep --config=")

    # Downstream: rows objectives, columns targets; mean ± std as computed here.
    main = _table(md, "Downstream probe on all modalities (test split)")
    assert main[0] == ["objective", "label acc. (%)"]
    assert [r[0] for r in main[2:]] == list(OBJECTIVES)
    for row in main[2:]:
        mean, std = _mean_std([results[row[0], s]["downstream"]["label/accuracy"] for s in SEEDS])
        assert row[1].strip("*") == f"{100 * mean:.2f} ± {100 * std:.2f}"
        got = summary["summary"][row[0]]["downstream/label/accuracy"]
        assert got["mean"] == pytest.approx(mean) and got["std"] == pytest.approx(std)
        assert got["values"] == [results[row[0], s]["downstream"]["label/accuracy"] for s in SEEDS]
    # Best in bold: the highest mean of the column.
    means = [float(r[1].strip("*").split(" ± ")[0]) for r in main[2:]]
    assert all(r[1].startswith("**") == (m == max(means)) for r, m in zip(main[2:], means))

    # Modality subsets: objective x every non-empty subset, by size.
    subsets = _table(md, "Modality subsets: label acc. (%)")
    assert subsets[0] == ["objective", "x0", "x1", "x2", "x0+x1", "x0+x2", "x1+x2", "x0+x1+x2"]
    row = subsets[2]
    mean, std = _mean_std(
        [results[row[0], s]["modality_subsets"]["x1+x2/label/accuracy"] for s in SEEDS]
    )
    assert row[6].strip("*") == f"{100 * mean:.2f} ± {100 * std:.2f}"

    # Retrieval: one table per query -> candidate pair, R@1/5/10, mAP, median rank. The
    # parity config retrieves only the parity modality from the others.
    assert "## Retrieval x1+x2->x0" not in md
    for pair in ("x0+x1->x2",):
        table = _table(md, f"Retrieval {pair}")
        assert table[0] == ["objective", "R@1", "R@5", "R@10", "mAP", "median_rank"]
        row = table[3]
        mean, std = _mean_std([results[row[0], s]["retrieval"][f"{pair}/mAP"] for s in SEEDS])
        assert row[4].strip("*") == f"{mean:.4f} ± {std:.4f}"
    assert "## Mutual-information lower bounds" in md
    times = _table(md, "Wall time per run (minutes)")
    assert times[0] == ["objective", "seed 42", "seed 0", "mean"]
    assert {r["objective"] for r in summary["runs"]} == set(OBJECTIVES)
    assert all(r["wall_time_s"] > 0 and r["status"] == "ok" for r in summary["runs"])

    # Figures: non-empty PNGs, linked from the report.
    names = ["curves.png", "subsets_label.png", "retrieval_x0_x1_to_x2.png"]
    names += [f"pca_{o}.png" for o in OBJECTIVES]
    for name in names:
        path = os.path.join(workdir, name)
        assert open(path, "rb").read(8) == PNG_MAGIC and os.path.getsize(path) > 1000, name
        assert f"]({name})" in md
    assert sorted(summary["figures"].values()) == sorted(
        f for f in os.listdir(workdir) if f.endswith(".png")
    )

    # Rerun: every run is skipped (nothing retrained, no time added), the report rebuilt.
    metrics = os.path.join(workdir, OBJECTIVES[0], "seed_42", "metrics.jsonl")
    before = (os.path.getmtime(metrics), open(metrics).read())
    state_before = open(os.path.join(workdir, OBJECTIVES[1], "seed_0", sweep.STATE_FILE)).read()
    os.remove(os.path.join(workdir, "report.md"))
    time.sleep(0.01)
    proc = run(cmd, env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert len(re.findall(r"Skipping .*seed_\d+ \(ok\)", proc.stderr)) == 4
    assert (os.path.getmtime(metrics), open(metrics).read()) == before
    assert open(os.path.join(workdir, OBJECTIVES[1], "seed_0", sweep.STATE_FILE)).read() == (
        state_before
    )
    assert open(os.path.join(workdir, "report.md")).read() == md


def test_unknown_objective_lists_the_valid_ones():
    config = os.path.join(ROOT, "experiments", "parity.py")
    with pytest.raises(
        ValueError, match=r"Unknown objective\(s\) \['ova_lb'\].*'ova_ib'.*'symile'"
    ):
        sweep.objective_configs(config, ["ova_ib", "ova_lb"], {})
    with pytest.raises(ValueError, match="use --seeds"):
        sweep.objective_configs(config, ["ova_ib"], {"seed": 3})


def test_seeds_are_checked_before_any_run(tmp_path):
    """A repeated seed was run once and averaged twice into mean ± std (86.67 ± 5.77 for
    0.90, 0.80, 0.90); a seed out of range failed in its turn, after the earlier seeds'
    runs. Both are one error before anything runs, as a seed that is not a number."""
    config = os.path.join(ROOT, "experiments", "parity.py") + ":runlocal"
    for seeds, match in (
        ([42, 0, 42], "seed 42 is given twice"),
        (["42", "-1"], r"each seed must be an integer in \[0, 2\*\*32\), got -1"),
        (["42", "x"], "'x' is not an integer"),
        ([], "at least one seed"),
    ):
        with pytest.raises(ValueError, match=match):
            sweep.sweep(config, ["ova_ib"], seeds, str(tmp_path / "w"))
        assert not os.path.exists(tmp_path / "w")
    assert sweep.check_seeds(["42", " 0", 1]) == [42, 0, 1]


def test_the_objective_hint_is_added_only_where_the_file_lacks_the_argument():
    with pytest.raises(ValueError, match=r"applies to ova_ib / ova_sufficiency only\.$"):
        sweep.load_experiment(os.path.join(ROOT, "experiments", "mlp_projector.py"), "symile")


def test_each_objective_keeps_its_defaults_and_overrides_apply_where_they_apply():
    """Each objective's config is the file's with objective=NAME (ova_ib: default.py's tau
    0.1 and beta 0; symile: its own logit_scale); shared overrides reach every run, an
    objective.* override only the objectives with that hyper-parameter."""
    config = os.path.join(ROOT, "experiments", "parity.py") + ":M=4,runlocal"
    out, notes = sweep.objective_configs(
        config,
        ["ova_ib", "symile", "pairwise_clip"],
        {"num_train_steps": 7, "objective.tau": 0.5},
    )
    assert [c.objective.name for c in out.values()] == ["ova_ib", "symile", "pairwise_clip"]
    assert all(c.num_train_steps == 7 and c.dataset.config.M == 4 for c in out.values())
    assert out["ova_ib"].objective.tau == 0.5 and out["ova_ib"].objective.beta == 0.0
    assert out["pairwise_clip"].objective.tau == 0.5
    assert "tau" not in out["symile"].objective
    assert out["symile"].objective.logit_scale == pytest.approx(1 / 0.07)  # its own default
    assert notes == ["`--config.objective.tau` does not apply to symile."]
    with pytest.raises(ValueError, match=r"'triangle'.*exactly 3 modalities"):
        sweep.objective_configs(config, ["ova_ib", "triangle"], {})


def test_a_run_trained_with_another_config_stops_the_sweep(tmp_path):
    config = os.path.join(ROOT, "experiments", "parity.py")
    cfg = sweep.objective_configs(config, ["ova_ib"], {})[0]["ova_ib"]
    rundir = tmp_path / "ova_ib" / "seed_42"
    rundir.mkdir(parents=True)
    other = json.loads(cfg.to_json_best_effort())
    other["batch_size"] = 32
    (rundir / "config.json").write_text(json.dumps(other))
    other["evaluator_kwargs"]["downstream"]["new_key"] = 1  # evaluation only: not reported
    (rundir / "config.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"another config \(differs in \['batch_size'\]\)") as e:
        sweep.run_one(cfg, "ova_ib", str(rundir))
    assert str(e.value).endswith("To continue or keep it, add --config.batch_size=32.")


def test_a_run_that_differs_only_in_evaluation_settings_is_the_same_run(tmp_path):
    """Evaluator settings added or changed after a run finished, and objective options
    added at their default, do not make it another run: the sweep skips it."""
    config = os.path.join(ROOT, "experiments", "parity.py")
    cfg = sweep.objective_configs(config, ["ova_ib"], {})[0]["ova_ib"]
    rundir = tmp_path / "ova_ib" / "seed_42"
    rundir.mkdir(parents=True)
    old = json.loads(cfg.to_json_best_effort())
    del old["evaluator_kwargs"]["downstream"]
    del old["objective"]["product_weight"]  # an option added later, at its default
    old["final_evaluators"] = ["downstream"]
    (rundir / "config.json").write_text(json.dumps(old))
    (rundir / sweep.STATE_FILE).write_text(json.dumps({"status": "failed", "error": "x"}))
    record = sweep.run_one(cfg, "ova_ib", str(rundir))
    assert (record.status, record.error) == ("failed", "x")
    # ... but the report says its results were evaluated otherwise (they were averaged in
    # with the others' without a word).
    assert "final_evaluators" in record.other_evaluation
    assert any(k.startswith("evaluator_kwargs.downstream") for k in record.other_evaluation)
    cfg.unlock()
    cfg.objective.product_weight = 0.5  # not the default: another run
    with pytest.raises(ValueError, match=r"differs in \['objective.product_weight'\]"):
        sweep.run_one(cfg, "ova_ib", str(rundir))


def test_a_run_that_goes_on_is_evaluated_with_the_commands_settings(tmp_path, monkeypatch):
    """An unfinished run whose record differs only in evaluation settings trains on and is
    evaluated with the command's settings: its record must not say "other evaluation"
    (it did, whenever config.json differed, finished or not)."""
    config = os.path.join(ROOT, "experiments", "parity.py")
    cfg = sweep.objective_configs(config, ["ova_ib"], {})[0]["ova_ib"]
    rundir = tmp_path / "ova_ib" / "seed_42"
    rundir.mkdir(parents=True)
    old = json.loads(cfg.to_json_best_effort())
    old["final_evaluators"] = ["downstream"]
    (rundir / "config.json").write_text(json.dumps(old))
    final = {"retrieval": {"R@1": 0.5}}
    monkeypatch.setattr(train, "train_and_evaluate", lambda c, w: {"final": final, "step": 1})
    record = sweep.run_one(cfg, "ova_ib", str(rundir))
    assert (record.status, record.results) == ("ok", final)
    assert record.other_evaluation == ()


def test_a_run_held_by_another_process_is_skipped_not_fatal(tmp_path):
    """Sweeps of one workdir in several processes (disjoint seeds, to use more cores): a
    run another process is training is skipped with a note, its files untouched."""
    from ovaib_jax import workdir as workdir_lib

    config = os.path.join(ROOT, "experiments", "parity.py")
    cfg = sweep.objective_configs(config, ["ova_ib"], {})[0]["ova_ib"]
    rundir = tmp_path / "ova_ib" / "seed_42"
    rundir.mkdir(parents=True)
    with workdir_lib.Lock(str(rundir)):  # held as a training process holds it
        record = sweep.run_one(cfg, "ova_ib", str(rundir))
    assert (record.status, record.results) == ("busy", None)
    assert "another process" in record.error or str(os.getpid()) in record.error
    assert not (rundir / sweep.STATE_FILE).exists()


def test_final_evaluators_run_once_and_results_are_completed_on_rerun(tmp_path):
    """The heavy evaluators run once after the last step (not at every eval step), the
    light ones periodically; results.json holds both; a finished run called again only
    rewrites a missing results.json."""
    workdir = str(tmp_path / "run")
    config = tiny_config(
        str(tmp_path / "data"),
        eval_every_steps=2,
        evaluators="heldout_loss",
        final_evaluators="retrieval",
    )
    out = train.train_and_evaluate(config, workdir)
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [x["step"] for x in lines if "eval/heldout_loss/loss" in x] == [2, 4, 6]
    assert not any(k.startswith("eval/retrieval") for x in lines for k in x)
    final = [x for x in lines if "final/retrieval/mAP" in x]
    assert [x["step"] for x in final] == [6]
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results == out["final"]
    assert results["step"] == 6 and set(results) == {"step", "heldout_loss", "retrieval"}
    assert results["retrieval"]["mAP"] == pytest.approx(final[0]["final/retrieval/mAP"])
    # The periodic results of the last step are reused, not recomputed.
    assert results["heldout_loss"]["loss"] == pytest.approx(
        [x for x in lines if "eval/heldout_loss/loss" in x][-1]["eval/heldout_loss/loss"]
    )

    os.remove(os.path.join(workdir, "results.json"))
    again = train.train_and_evaluate(config, workdir)
    assert again["step"] == 6 and again["train"] == {}  # no step was taken
    redone = json.load(open(os.path.join(workdir, "results.json")))
    assert redone["retrieval"] == pytest.approx(results["retrieval"])
    assert redone["heldout_loss"]["loss"] == pytest.approx(results["heldout_loss"]["loss"])
    mtime = os.path.getmtime(os.path.join(workdir, "results.json"))
    logged = open(os.path.join(workdir, "metrics.jsonl")).read()
    assert logged.count("final/retrieval/mAP") == 2  # the first evaluation and the redone one
    assert train.train_and_evaluate(config, workdir)["final"] == redone  # read, not redone
    assert os.path.getmtime(os.path.join(workdir, "results.json")) == mtime
    assert open(os.path.join(workdir, "metrics.jsonl")).read() == logged


def test_a_stopped_sweep_says_how_it_stopped():
    """A run stopped by SIGTERM or one Ctrl-C carries its step; a second Ctrl-C raises a
    bare KeyboardInterrupt, whose message is empty: the sweep still says what to do."""
    assert sweep.stopped_message(KeyboardInterrupt("w stopped at step 3")) == "w stopped at step 3"
    assert sweep.stopped_message(KeyboardInterrupt()) == (
        "Stopped at once (Ctrl-C); rerun the sweep to resume."
    )
