"""Trains every objective with every seed on one experiment, then writes the comparison.

    python -m ovaib_jax.sweep --config=experiments/parity.py:M=4 \\
        --objectives=ova_ib,symile,gram,pairwise_clip --seeds=42,0,1 --workdir=DIR \\
        [--config.num_train_steps=500 ...]

Every run uses the same encoders, data and hyper-parameters; only the objective (and
the seed) changes. The config of objective NAME is the experiment file loaded with the
argument ``objective=NAME`` (so each objective gets its own hyper-parameters and
defaults, as ``--config=FILE:objective=NAME`` gives to ``ovaib_jax.main``), then the
``--config.*`` overrides: every override of a field outside ``objective`` applies to
every run, an ``objective.*`` override to the objectives that have that
hyper-parameter (overrides are checked against the config of the file's default
objective).

Run ``(objective, seed)`` lives in ``DIR/<objective>/seed_<seed>/`` (the usual workdir
of ``ovaib_jax.main``). Re-running the same command skips finished runs (their
``results.json`` is there) and resumes interrupted ones from their last checkpoint; a
run trained with another config stops the sweep with the differing keys. A run whose
loss diverges is reported as failed and not retried. Several processes may run one
sweep directory at once (e.g. one per seed, to use more cores): a run that another
process is training is skipped with a warning and left out of this process's report
(run the command again once all are done for the full report). The evaluation is the config's
``final_evaluators`` (run once, after the last step) and ``evaluators``.

Then ``DIR/report.md`` and ``DIR/report.json`` (:func:`ovaib_jax.reporting.report.
sweep_report`: mean ± std over seeds, rows objectives, columns tasks, best in bold;
modality subsets; retrieval per pair; MI bounds; wall time per run; the command) and
PNG figures beside them (training curves, subset heatmaps, retrieval bars, PCA of one
run's test embeddings per objective).

The command line turns on JAX's persistent compilation cache in ``DIR/jax_cache`` (the
runs of one objective differ only in data, so later seeds skip compiling); pass
``--nocompilation_cache`` to keep it off, or set ``JAX_COMPILATION_CACHE_DIR``.
"""

from __future__ import annotations

import copy
import logging
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections

from ovaib_jax import configs, console, data, evaluation, losses, paths, records, train
from ovaib_jax.reporting import RunRecord, sweep_figures, sweep_report
from ovaib_jax.validation import check_seed, validate_config
from ovaib_jax.workdir import WorkdirBusyError

log = logging.getLogger(__name__)

STATE_FILE = "sweep_run.json"  # per run: wall time over all attempts, status, error


def load_experiment(config_file: str, objective: str) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of ``config_file`` (``"path.py[:arg]"``) with ``objective=NAME``
    put into its argument."""
    path, _, arg = config_file.partition(":")
    items = [a for a in arg.split(",") if a.strip() and not a.strip().startswith("objective=")]
    try:
        return configs.load_experiment(path, ",".join([*items, f"objective={objective}"]))
    except ValueError as e:
        # The hint only where the file does not take the argument the sweep passes.
        msg = str(e).rstrip(".")
        if "argument 'objective'" in msg:
            msg += " (a sweep needs the argument objective=NAME)"
        raise ValueError(f"{path}: {msg}.") from None


def objective_configs(
    config_file: str, objectives: Sequence[str], overrides: Mapping[str, Any]
) -> tuple[dict[str, ml_collections.ConfigDict], list[str]]:
    """The config of every objective with the overrides applied, each validated.

    Returns:
      ``({objective: config}, notes)``; notes say which ``objective.*`` overrides some
      objectives do not take.

    Raises:
      ValueError: an unknown objective (listing the valid ones), an override of
        ``seed`` or ``objective.name``, or a config that does not validate.
    """
    valid = losses.names()
    unknown = [o for o in objectives if o not in valid]
    if unknown or not objectives:
        raise ValueError(
            f"Unknown objective(s) {unknown or objectives}; valid objectives are {list(valid)}."
        )
    for key in ("seed", "objective.name"):
        if key in overrides:
            raise ValueError(
                f"--config.{key} cannot be overridden in a sweep: use --seeds and --objectives."
            )
    out, notes = {}, []
    for name in objectives:
        config = load_experiment(config_file, name)
        applies = {}
        for key, value in overrides.items():
            if key.startswith("objective.") and key.partition(".")[2] not in config.objective:
                notes.append(f"`--config.{key}` does not apply to {name}.")
            else:
                applies[key] = value
        configs.apply_overrides(config, applies)
        try:
            validate_config(config)
        except ValueError as e:
            raise ValueError(f"objective {name!r}: {e}") from None
        config.lock()
        out[name] = config
    return out, notes


def run_one(config: ml_collections.ConfigDict, objective: str, workdir: str) -> RunRecord:
    """Trains and evaluates one run (skipped when finished or failed before, or when
    another process is training it: status ``"busy"``, nothing written).

    Raises:
      ValueError: ``workdir`` holds a run trained with another config.
      KeyboardInterrupt: the run was stopped by SIGTERM or Ctrl-C (its checkpoint is
        saved), or by a second Ctrl-C (its last saved checkpoint is kept).
    """
    old = records.read_config_json(workdir)
    eval_only: list[str] = []
    if old:
        diff = configs.changed_keys(old, config)
        eval_only = [k for k in diff if configs.is_under(k, configs.EVALUATION_FIELDS)]
        if eval_only:
            log.warning(
                "%s was set up with other evaluation settings (%s); its results keep them "
                "(re-evaluate with python -m ovaib_jax.evaluate --workdir=%s --set=...).",
                workdir,
                eval_only,
                workdir,
            )
            diff = [k for k in diff if k not in eval_only]
        if diff:
            changes = configs.run_changes(old, config)
            flags = configs.continue_flags(changes) if sorted(changes) == diff else ""
            again = f" To continue or keep it, add {flags}." if flags else ""
            raise ValueError(
                f"{workdir} holds a run trained with another config (differs in {diff}); "
                f"use another --workdir, or delete that run.{again}"
            )
    state_path = paths.join(workdir, STATE_FILE)
    state = {"wall_time_s": 0.0, "status": "running", "error": ""}
    state.update(records.read_json(state_path) or {})
    record = RunRecord(objective, int(config.seed), workdir, None, 0.0)
    results = records.read_results(workdir)
    finished = results is not None and results.get("step") == config.num_train_steps
    if state["status"] == "failed" or finished:
        record.results, record.wall_time_s = results, state["wall_time_s"]
        record.status, record.error = ("failed", state["error"]) if not finished else ("ok", "")
        # Kept as they are: evaluated with the recorded settings (a run that goes on now is
        # evaluated with the command's, which its config.json then records).
        record.other_evaluation = tuple(eval_only)
        log.info("Skipping %s (%s).", workdir, record.status)
        return record
    paths.makedirs(workdir)
    start = time.perf_counter()
    out: dict[str, Any] = {}
    busy = None
    try:
        out = train.train_and_evaluate(config, workdir)
        state["status"] = "ok"
    except WorkdirBusyError as e:  # another process trains it (a sweep split by seeds)
        busy = e
    except FloatingPointError as e:
        log.error("%s diverged: %s", workdir, e)
        state["status"], state["error"] = "failed", str(e).split(". ")[0]
    finally:
        if busy is None:  # the holder's state is the holder's to write
            state["wall_time_s"] += time.perf_counter() - start
            records.write_json(state_path, state, indent=2)
    if busy is not None:
        log.warning("Skipping %s: %s", workdir, busy)
        record.status, record.error = "busy", str(busy)
        return record
    if out.get("preempted"):
        raise KeyboardInterrupt(
            f"{workdir} stopped (SIGTERM or Ctrl-C) at step {out.get('step')}, its checkpoint "
            "saved; rerun the sweep to resume."
        )
    record.results, record.status, record.error = out.get("final"), state["status"], state["error"]
    record.wall_time_s = state["wall_time_s"]
    return record


def embed_test_split(config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, Any, Any]:
    """``(z (M, N, d), labels (N,) or None, modality names)`` of the eval split, embedded
    with the run's last checkpoint (labels: the first classification target)."""
    restored = evaluation.restore(config, workdir)
    emb = restored.evaluation([]).embed(restored.variables, config.dataset.eval_split)
    spec = restored.resolved.spec
    cls = [t.name for t in spec.targets if t.kind == "classification"]
    return emb.z, emb.targets[cls[0]] if cls else None, emb.modality_names


def check_seeds(seeds: Sequence[int | str]) -> list[int]:
    """The seeds as ints, checked before any run: each valid as ``config.seed``
    (:func:`~ovaib_jax.validation.check_seed`) and given once (a repeated seed would be
    averaged twice into the report's mean ± std)."""
    out = []
    for s in seeds:
        try:
            seed = int(str(s).strip())
        except ValueError:
            raise ValueError(f"--seeds: {s!r} is not an integer.") from None
        check_seed(seed, "--seeds: each seed")
        if seed in out:
            raise ValueError(f"--seeds: seed {seed} is given twice; give each seed once.")
        out.append(seed)
    if not out:
        raise ValueError("--seeds: give at least one seed.")
    return out


def sweep(
    config_file: str,
    objectives: Sequence[str],
    seeds: Sequence[int | str],
    workdir: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Runs the sweep (module docstring) and writes the report; returns report.json's
    content."""
    seeds = check_seeds(seeds)
    per_objective, notes = objective_configs(config_file, objectives, overrides or {})
    runs: list[RunRecord] = []
    busy = []
    for seed in seeds:  # seed-major: after the first pass every objective has one run
        for name, base in per_objective.items():
            config = copy.deepcopy(base)
            config.seed = int(seed)
            rundir = paths.join(workdir, name, f"seed_{seed}")
            log.info("Run %s, seed %d -> %s", name, seed, rundir)
            record = run_one(config, name, rundir)
            if record.status != "busy":  # rerun the sweep once it is done to report it
                runs.append(record)
            else:
                busy.append(f"{name} seed {seed}")
    if busy:
        notes = [
            *notes,
            f"Left out, being trained by another process: {', '.join(busy)} (rerun the sweep "
            "once they are done to report them).",
        ]
    embeddings = {}
    for name, config in per_objective.items():
        done = [r for r in runs if r.objective == name and r.results is not None]
        if done:
            run_config = copy.deepcopy(config)
            run_config.seed = done[0].seed
            embeddings[name] = embed_test_split(run_config, done[0].workdir)
    figures = sweep_figures(runs, workdir, embeddings=embeddings)
    markdown, summary = sweep_report(
        runs, title=config_file, command=command, figures=figures, notes=notes
    )
    records.write_text(paths.join(workdir, "report.md"), markdown)
    records.write_json(paths.join(workdir, "report.json"), summary, indent=2)
    log.info("Wrote %s", paths.join(workdir, "report.md"))
    return summary


def stopped_message(e: KeyboardInterrupt) -> str:
    """The line a stopped sweep logs: the run's own message (step and checkpoint), or for
    a bare KeyboardInterrupt (a second Ctrl-C stops at once) a generic one."""
    return str(e) or "Stopped at once (Ctrl-C); rerun the sweep to resume."


def main(argv: list[str]) -> None:
    from absl import flags
    from ml_collections import config_flags

    console.setup_logging(argv)
    if not flags.FLAGS.workdir.strip():
        console.exit_with("ovaib_jax.sweep", "--workdir is empty: name the sweep's directory.")
    if flags.FLAGS.compilation_cache and not jax.config.jax_compilation_cache_dir:
        # Runs of one objective differ only in the seed (data, not code): with a persistent
        # compilation cache the later seeds skip compiling (minutes for ResNet on CPU).
        jax.config.update("jax_compilation_cache_dir", paths.join(flags.FLAGS.workdir, "jax_cache"))
    flag = flags.FLAGS["config"]
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "ovaib_jax.sweep", *sys.argv[1:]])
    try:
        sweep(
            config_flags.get_config_filename(flag),
            [o.strip() for o in flags.FLAGS.objectives if o.strip()],
            flags.FLAGS.seeds,
            flags.FLAGS.workdir,
            overrides=config_flags.get_override_values(flag),
            command=command,
        )
    except KeyboardInterrupt as e:  # SIGTERM or Ctrl-C: the run's checkpoint is saved
        log.warning("%s", stopped_message(e))
        sys.exit(1)
    except data.MissingDataError as e:  # the raw files of a manual dataset
        flag = "--config.dataset.manual_dir"
        console.exit_with("ovaib_jax.sweep", str(e.naming_flag(flag)), status=1)
    except (ValueError, FileNotFoundError) as e:  # a bad command line: one clear message
        console.exit_with("ovaib_jax.sweep", str(e))


def _define_flags() -> None:
    from absl import flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file(
        "config", None, "Experiment file (experiments/*.py[:args]).", lock_config=True
    )
    flags.DEFINE_list("objectives", None, "Comma-separated objective names.")
    flags.DEFINE_list("seeds", ["42", "0", "1"], "Comma-separated seeds (paper: 42,0,1).")
    flags.DEFINE_string("workdir", None, "The sweep's directory (runs, report, figures).")
    flags.DEFINE_bool(
        "compilation_cache",
        True,
        "Persistent JAX compilation cache in WORKDIR/jax_cache (unless JAX already has one).",
    )
    flags.mark_flags_as_required(["config", "objectives", "workdir"])


if __name__ == "__main__":
    from absl import app

    _define_flags()
    app.run(main, flags_parser=lambda argv: console.parse_flags(argv, program="ovaib_jax.sweep"))
