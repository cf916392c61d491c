"""Trains a model: ``python -m ovaib_jax.main --config=experiments/default.py --workdir=DIR``.

Override any config field on the command line, e.g. ``--config.batch_size=128
--config.objective.tau=0.05``; pick another objective's defaults with
``--config=experiments/default.py:objective=symile``. Re-running with the same workdir
resumes from its latest good checkpoint.
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from ovaib_jax import train

FLAGS = flags.FLAGS

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/*.py).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and config.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.getLogger("ovaib_jax").setLevel(logging.INFO)
    # orbax and TFDS log every file operation through absl at INFO: keep warnings only.
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except FloatingPointError as e:  # a diverged run: the message says what to do
        logging.error("%s", e)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
