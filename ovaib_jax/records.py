"""Every file a run writes in its workdir, and the format of each (the one module that
writes them).

* ``config.json``: the run's config (:func:`write_config`, :func:`read_config_json`).
* ``metrics.jsonl``: one JSON object per logged step, ``{"step": s, "<tag>": value}``,
  with tags ``train/<metric>``, ``eval/<evaluator>/<metric>`` and
  ``final/<evaluator>/<metric>`` (:class:`MetricWriter`, :func:`read_metrics`); the same
  scalars go to TensorBoard under ``tensorboard/``.
* ``results.json``: the final evaluation, ``{"step": s, "<evaluator>": {"<metric>": v}}``
  (:func:`write_results`, :func:`read_results`).
* ``eval/results_step_<s>.json``: an evaluation of a checkpoint by ``ovaib_jax.evaluate``
  (:func:`write_eval_results`); ``eval/results.json`` is the latest one evaluated.

Whole files are written atomically (:func:`ovaib_jax.paths.write_text`): a run killed at
any moment leaves the previous version or the new one, never half of one. Only process 0
writes. Every path may be local or in a bucket (``gs://``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from ovaib_jax import paths

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "RESULTS_FILE",
    "MetricWriter",
    "numbers",
    "read_config_json",
    "read_json",
    "read_metrics",
    "read_results",
    "tb_name",
    "write_config",
    "write_eval_results",
    "write_json",
    "write_results",
    "write_text",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
EVAL_DIR = "eval"


def _primary() -> bool:
    return jax.process_index() == 0


def write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` atomically (creating its directory)."""
    paths.write_text(path, text)


def strict(obj: Any) -> Any:
    """``obj`` with every non-finite number (NaN, +-inf; Python or numpy) replaced by None
    and numpy scalars by Python numbers, so that ``json.dumps`` writes standard JSON
    (``null``), which strict parsers (``jq``, JavaScript, pandas' ujson) read; NumPy reads
    ``null`` back as NaN in a float array (``np.asarray([None], float)``)."""
    if isinstance(obj, Mapping):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if hasattr(obj, "__array__"):  # numpy and jax arrays, 0-d included
        return strict(np.asarray(obj).tolist())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Standard JSON of ``obj`` (:func:`strict`: non-finite numbers as null)."""
    return json.dumps(strict(obj), allow_nan=False, default=float, **kwargs)


def write_json(path: str, obj: Any, **kwargs: Any) -> None:
    """Standard JSON of ``obj`` (:func:`dumps`) to ``path`` atomically."""
    write_text(path, dumps(obj, **kwargs))


def read_json(path: str) -> Any:
    """The JSON content of ``path``, or None when there is no such file."""
    if not paths.exists(path):
        return None
    return json.loads(paths.read_text(path))


# --------------------------------------------------------------------------- config


def write_config(workdir: str, config_json: str) -> None:
    """Records the run's config (``config.to_json_best_effort(indent=2)``) on process 0."""
    if _primary():
        write_text(paths.join(workdir, CONFIG_FILE), config_json)


def read_config_json(workdir: str) -> dict[str, Any] | None:
    """``WORKDIR/config.json`` as a dict, or None."""
    return read_json(paths.join(workdir, CONFIG_FILE))


# --------------------------------------------------------------------------- results


def read_results(workdir: str) -> dict[str, Any] | None:
    """``WORKDIR/results.json`` (the final evaluation of a finished run), or None."""
    return read_json(paths.join(workdir, RESULTS_FILE))


def write_results(workdir: str, results: Mapping[str, Any]) -> None:
    """Writes ``WORKDIR/results.json`` (process 0; evaluator order kept: subsets by size)."""
    if _primary():
        write_json(paths.join(workdir, RESULTS_FILE), dict(results), indent=2)


def write_eval_results(workdir: str, results: Mapping[str, Any], latest: bool) -> str:
    """Writes ``WORKDIR/eval/results_step_<step>.json`` and, when ``latest`` (the latest
    checkpoint was evaluated), ``eval/results.json``. Returns the first path."""
    path = paths.join(workdir, EVAL_DIR, f"results_step_{int(results['step'])}.json")
    if _primary():
        write_json(path, dict(results), indent=2, sort_keys=True)
        if latest:
            write_json(
                paths.join(workdir, EVAL_DIR, RESULTS_FILE), dict(results), indent=2, sort_keys=True
            )
    return path


# --------------------------------------------------------------------------- metrics


def numbers(results: Mapping[str, Mapping[str, Any]], prefix: str) -> dict[str, float]:
    """``{"{prefix}/{evaluator}/{metric}": value}`` of the numbers (tables stay out)."""
    return {
        f"{prefix}/{name}/{k}": float(v)
        for name, kv in results.items()
        for k, v in kv.items()
        if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)
    }


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (a workdir or the file itself)."""
    path = os.fspath(path)
    if paths.is_dir(path):
        path = paths.join(path, METRICS_FILE)
    if not paths.exists(path):
        return []
    read = (_record_of(line) for line in paths.read_text(path).splitlines() if line.strip())
    return [record for record in read if record is not None]


def tb_name(key: str) -> str:
    """A TensorBoard-legal tag: ``"retrieval/a+b->c/R@1"`` -> ``"retrieval/a_b_to_c/R_at_1"``
    (tensorboardX would rename it itself, logging a line per tag)."""
    key = key.replace("->", "_to_").replace("@", "_at_")
    return re.sub(r"[^-/\w.]", "_", key)


def _record_of(line: str) -> dict[str, Any] | None:
    """A ``metrics.jsonl`` line read; None for a line cut short (a full disk, a kill
    mid-write), which readers skip and resuming drops."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


class MetricWriter:
    """Scalars to TensorBoard (tensorboardX) and ``metrics.jsonl`` on process 0 only.

    On resume, lines of ``metrics.jsonl`` beyond the restored step (logged by a run that
    was killed before its next checkpoint) are dropped, and TensorBoard purges them (also
    when the run starts again from step 0: a killed attempt may have logged steps).
    """

    def __init__(self, workdir: str, start_step: int):
        self.active = _primary()
        self.path = paths.join(workdir, METRICS_FILE)
        self.tb = None
        self._kinds: set[tuple[int, str]] = set()  # (step, key prefix) of every line
        if not self.active:
            return
        paths.makedirs(workdir)
        if paths.exists(self.path):
            lines = [ln + "\n" for ln in paths.read_text(self.path).splitlines() if ln.strip()]
            read = [(ln, _record_of(ln)) for ln in lines]
            kept = [(ln, r) for ln, r in read if r is not None and r.get("step", 0) <= start_step]
            if len(kept) != len(lines):
                write_text(self.path, "".join(ln for ln, _ in kept))
            for _, r in kept:
                self._kinds.update((r.get("step", 0), k.split("/")[0]) for k in r)
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(paths.join(workdir, "tensorboard"), purge_step=start_step + 1)

    def has(self, step: int, prefix: str) -> bool:
        """Whether a line of step ``step`` has a key ``<prefix>/...`` (True on the
        processes that do not write: they have nothing to add)."""
        return not self.active or (int(step), prefix) in self._kinds

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Appends one line ``{"step": step, **scalars}`` (a non-finite value as null) and
        the finite scalars to TensorBoard. A NaN there draws nothing and tensorboardX logs
        a warning for each (e.g. the few-label probes' ``val_loss``, NaN by design: they
        have no validation split); metrics.jsonl keeps every key."""
        if not self.active:
            return
        values = {k: float(v) for k, v in scalars.items()}
        line = dumps({"step": int(step), **values})
        paths.append_text(self.path, line + "\n")  # one write: whole, or dropped on resume
        self._kinds.update((int(step), k.split("/")[0]) for k in values)
        for k, v in values.items():
            if math.isfinite(v):
                self.tb.add_scalar(tb_name(k), v, int(step))
        self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
