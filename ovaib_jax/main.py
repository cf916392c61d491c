"""Trains a model: ``python -m ovaib_jax.main --config=experiments/default.py --workdir=DIR``.

Override any config field on the command line, e.g. ``--config.batch_size=128
--config.objective.tau=0.05``; pick another objective's defaults with
``--config=experiments/default.py:objective=symile``. Re-running with the same workdir
resumes from its latest good checkpoint.

A config error (an unknown key, a value the run cannot take) is one line on stderr and
exit status 2; raw files missing for the dataset are one message naming
``--config.dataset.manual_dir`` and exit status 1. At the end of a run the final metrics
are logged as a short table with their chance levels.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from ovaib_jax import console, data, paths, runtime, train
from ovaib_jax.checkpointing import (
    CheckpointMismatchError,
    CheckpointSaveError,
    NoRestorableCheckpointError,
)
from ovaib_jax.validation import Resolved, validate_config
from ovaib_jax.workdir import ResumeError, WorkdirBusyError

FLAGS = flags.FLAGS
PROGRAM = "ovaib_jax.main"
MANUAL_DIR_FLAG = "--config.dataset.manual_dir"

log = logging.getLogger(__name__)

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/*.py).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
flags.mark_flags_as_required(["config", "workdir"])


def check_config(config: ml_collections.ConfigDict, program: str = PROGRAM) -> Resolved:
    """``validate_config(config)``; a config error exits with one line (status 2)."""
    try:
        return validate_config(config)
    except ValueError as e:
        console.exit_with(program, f"config error: {e}")


def log_summary(config: ml_collections.ConfigDict, resolved: Resolved, out: dict[str, Any]):
    """Logs :func:`ovaib_jax.console.summary_table` of ``train_and_evaluate``'s result."""
    results = out.get("final") or {"step": out.get("step"), **(out.get("eval") or {})}
    classes = {t.name: t.num_classes for t in resolved.spec.targets if t.num_classes}
    table = console.summary_table(
        results,
        out.get("train"),
        eval_batch_size=config.eval_batch_size,
        batch_size=config.batch_size,
        num_classes=classes,
        dataset=config.dataset.name,
    )
    log.info("%s", table)


def train_main(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """What ``main`` does with the parsed flags: validates ``config`` (a config error is
    one line and exit status 2), trains, and logs the summary table; missing raw files
    exit with one message naming ``--config.dataset.manual_dir`` (status 1)."""
    if not str(workdir or "").strip():
        console.exit_with(PROGRAM, "--workdir is empty: name the run's directory.")
    try:
        runtime.initialize_distributed(config)  # before anything touches the devices
    except ValueError as e:
        console.exit_with(PROGRAM, f"config error: {e}")
    try:
        resolved = check_config(config)
        try:
            paths.makedirs(workdir)
        except OSError as e:  # e.g. the workdir is a file, or its parent is read-only
            console.exit_with(PROGRAM, f"cannot use --workdir={workdir}: {e}", status=1)
        out = train.train_and_evaluate(config, workdir)
    except FloatingPointError as e:  # a diverged run: the message says what to do
        logging.error("%s", e)
        sys.exit(1)
    except (ResumeError, WorkdirBusyError, CheckpointMismatchError) as e:
        console.exit_with(PROGRAM, str(e), status=1)  # nothing was changed in the workdir
    except NoRestorableCheckpointError as e:  # nothing was moved: the message says why
        console.exit_with(PROGRAM, str(e), status=1)
    except (CheckpointSaveError, train.WriteError) as e:
        # One message; then exit without tearing down orbax's failed background writes
        # (their coroutines would each print a traceback at interpreter shutdown).
        sys.stderr.write(f"{PROGRAM}: {e}\n")
        sys.stderr.flush()
        logging.shutdown()
        os._exit(1)
    except console.ConfigError as e:  # found once the dataset is built
        console.exit_with(PROGRAM, f"config error: {e}")
    except data.MissingDataError as e:  # the raw files of a manual dataset
        console.exit_with(PROGRAM, str(e.naming_flag(MANUAL_DIR_FLAG)), status=1)
    except data.CorruptDataError as e:  # a damaged file: the message says how to rebuild
        console.exit_with(PROGRAM, str(e), status=1)
    except KeyboardInterrupt:  # a second Ctrl-C (the first saves and stops at the next step)
        console.exit_with(
            PROGRAM,
            "stopped at once (Ctrl-C); the last saved checkpoint is kept: rerun the same "
            "command to resume from it.",
            status=130,
        )
    if jax.process_index() == 0 and not out.get("preempted"):
        log_summary(config, resolved, out)
    return out


def main(argv: list[str]) -> None:
    console.setup_logging(argv)
    train_main(FLAGS.config, FLAGS.workdir)


def run() -> None:
    app.run(main, flags_parser=lambda argv: console.parse_flags(argv, program=PROGRAM))


if __name__ == "__main__":
    run()
