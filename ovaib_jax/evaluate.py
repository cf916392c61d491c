"""Evaluates a checkpoint: ``python -m ovaib_jax.evaluate --workdir=DIR``.

    python -m ovaib_jax.evaluate --workdir=DIR [--config=experiments/default.py] [--step=N] \
        [--set=final_evaluators=downstream --set=evaluator_kwargs.downstream.features=embedding]
        [--out=PATH.json]

Restores the model variables of step N (default: the latest good checkpoint), runs every
evaluator named in ``config.evaluators`` and ``config.final_evaluators`` on the embedded
splits and writes ``DIR/eval/results_step_N.json`` (and ``DIR/eval/results.json`` when
no ``--step`` was given, so the latest good checkpoint was evaluated; an explicit
``--step`` never replaces it): ``{"step": N, "<evaluator>": {"<metric>":
value}}``, and ``"config_changes": {key: {"run": ..., "evaluated": ...}}`` where the
config evaluated differs from the run's beyond its evaluators and data paths (e.g.
``--set=objective.tau=0.5``); with ``--out=PATH`` only PATH, and nothing under DIR (a
diagnostic evaluation, e.g. with other ``--set`` values, then leaves the run's results as
they were). Without
``--config`` the run's own ``DIR/config.json`` is used; ``--set=KEY=VALUE`` (repeatable)
overrides one of its keys (dotted, parsed as the type of the value it replaces; see
:func:`ovaib_jax.configs.apply_overrides`).
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from ovaib_jax import configs, console, data, evaluation, inputs, paths, records, runtime
from ovaib_jax.checkpointing import CheckpointMismatchError, NoRestorableCheckpointError
from ovaib_jax.validation import validate_config

__all__ = ["evaluate_checkpoint", "load_config"]

# The minimum an evaluation reports when the config names no evaluator.
DEFAULT_EVALUATORS = ["heldout_loss", "inbatch_retrieval"]


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Restores the model variables of ``step`` (latest good if None) and evaluates them
    with ``config.evaluators`` and ``config.final_evaluators``.

    Writes ``WORKDIR/eval/results_step_<step>.json`` (and ``eval/results.json`` when
    ``step`` is None) on process 0, or only the JSON file ``out`` when given, and
    returns its content.
    """
    restored = evaluation.restore(config, workdir, step)
    names = configs.all_evaluator_names(config) or DEFAULT_EVALUATORS
    inputs.prepare_dataset(config)
    inputs.check_evaluator_keys(config, names)  # before any split is embedded
    results = {
        "step": restored.step,
        **restored.evaluation(names, prepared=True).run(restored.variables),
    }
    changes = _config_changes(config, workdir)
    if changes:  # the results are not the run's as trained: say so in them
        results["config_changes"] = changes
    if out:
        if jax.process_index() == 0:
            records.write_json(out, results, indent=2, sort_keys=True)
    else:
        records.write_eval_results(workdir, results, latest=step is None)
    return results


def _config_changes(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """``{key: {"run": recorded value, "evaluated": value}}`` for the keys in which
    ``config`` differs from the run's ``config.json`` beyond what a rerun may change
    (:data:`ovaib_jax.configs.RESUMABLE_FIELDS`: evaluators, their kwargs, data paths)."""
    recorded = records.read_config_json(workdir)
    if recorded is None:
        return {}
    changes = configs.run_changes(recorded, config)
    return {k: {"run": was, "evaluated": now} for k, (was, now) in changes.items()}


def load_config(
    config: ml_collections.ConfigDict | None, workdir: str
) -> ml_collections.ConfigDict:
    """The ``--config`` given, else the run's ``WORKDIR/config.json``."""
    if config is not None:
        return config
    raw = records.read_config_json(workdir)
    if raw is None:
        raise FileNotFoundError(
            f"No --config given and no {paths.join(workdir, records.CONFIG_FILE)}."
        )
    return configs.from_json(raw)


def _define_flags() -> None:
    # Defined only when run as a program: ``ovaib_jax.main`` defines flags of the same names.
    config_flags.DEFINE_config_file(
        "config", None, "Experiment config file (default: WORKDIR/config.json).", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "The run's directory (holds checkpoints/).")
    flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest good).")
    flags.DEFINE_multi_string("set", [], "KEY=VALUE: override a key of the config (repeatable).")
    flags.DEFINE_string("out", None, "Write the results to this JSON file only (not WORKDIR/eval).")
    flags.mark_flags_as_required(["workdir"])


PROGRAM = "ovaib_jax.evaluate"


def _config_or_exit(f: Any) -> ml_collections.ConfigDict:
    """The config with the ``--set`` overrides, validated; a config error is one line on
    stderr and exit status 2 (the closest valid key for a mistyped one)."""
    if not f.workdir.strip():
        console.exit_with(PROGRAM, "--workdir is empty: name the run's directory.")
    try:
        config = load_config(f.config, f.workdir)
    except FileNotFoundError as e:
        console.exit_with(PROGRAM, str(e))
    try:
        configs.apply_overrides(config, f.set)
    except ValueError as e:
        # An unknown key (not a new key of an evaluator's section, which is allowed).
        keys = [item.partition("=")[0] for item in f.set]
        keys = [k for k in keys if not (k.startswith("evaluator_kwargs.") and k.count(".") == 2)]
        messages = [m for k in keys if (m := console.unknown_key_message(config, k, flag="--set="))]
        console.exit_with(PROGRAM, messages[0] if messages else str(e))
    try:
        # Before anything touches the devices; a recorded multi-host run's process count
        # without its (environment's) coordinator evaluates on one process.
        runtime.initialize_distributed(config, training=False)
        validate_config(config)
    except ValueError as e:
        console.exit_with(PROGRAM, f"config error: {e}")
    return config


def evaluate_main(
    config: ml_collections.ConfigDict,
    workdir: str,
    step: int | None = None,
    out: str | None = None,
    manual_dir_flag: str = "--set=dataset.manual_dir",
) -> None:
    """:func:`evaluate_checkpoint`, its results printed as JSON; expected failures end
    the program with one line (status 1). ``manual_dir_flag``: the flag that names the
    raw files' directory on this command line."""
    try:
        results = evaluate_checkpoint(config, workdir, step, out)
    except data.MissingDataError as e:  # the raw files of a manual dataset
        console.exit_with(PROGRAM, str(e.naming_flag(manual_dir_flag)), status=1)
    except console.ConfigError as e:  # found once the dataset is built
        console.exit_with(PROGRAM, f"config error: {e}")
    except (
        data.CorruptDataError,  # a damaged data file: the message says how to rebuild
        FileNotFoundError,
        CheckpointMismatchError,
        NoRestorableCheckpointError,
    ) as e:
        console.exit_with(PROGRAM, str(e), status=1)
    if jax.process_index() == 0:
        sys.stdout.write(records.dumps(results, indent=2, sort_keys=True))
        sys.stdout.write("\n")


def main(argv: list[str]) -> None:
    del argv
    console.setup_logging()
    f = flags.FLAGS
    config = _config_or_exit(f)
    flag = "--config.dataset.manual_dir" if f.config is not None else "--set=dataset.manual_dir"
    evaluate_main(config, f.workdir, f.step, f.out, flag)


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=lambda argv: console.parse_flags(argv, program=PROGRAM))
