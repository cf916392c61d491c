"""The span + product score's weight chosen on training data (issue 13 section 6).

    python scripts/score_weight.py RUN_DIR [RUN_DIR ...] [--weights=1,0.3,0.1,0.03,0]
        [--select_split=train[:3000]]

A run of ``ova_ib_heads`` (or ``ova_ib`` with ``product_weight > 0``) on
``ovaib_trifeature`` retrieves with ``span score + w x product score``, ``w`` the
``product_weight`` it was trained with. The score's weight need not be the loss's: this
script keeps the trained model and chooses ``w`` for each run on training data. For each
run it restores the last checkpoint, embeds ``--select_split`` and the test split once,
and retrieves both with every weight of ``--weights``, twice: with shape relevance (the
trifeature tables' "retrieval R@1 / mAP") and with the colour bits joined to the shape
("retrieval R@1 (shape + colour bit)"). The weight chosen is the one with the largest
mean of the shape mAP and the shape + colour-bit R@1 on the selection split (ties: the
larger weight); the test split is not looked at to choose it.

The selection split is part of the training split (the builders have no validation
split), so its absolute numbers are optimistic; only their order over the weights is
used. Each run gets a derived run directory ``DEST/OBJECTIVE/seed_S`` (``DEST``: the
sweep directory of the run with ``_score_weight`` appended) that
``scripts/results_tables.py`` reads like a run: ``results.json`` is the run's with its
retrieval replaced by the test retrieval at the chosen weight, ``eval/results.json`` the
colour-bit retrieval at it, ``config.json`` and ``metrics.jsonl`` are copied, and
``score_weight.json`` holds every weight's numbers on both splits, the choice and the
seconds the choice took (``sweep_run.json``, the training's wall time, is copied too).
Runs whose ``score_weight.json`` exists are skipped.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


METRICS = ("R@1", "R@5", "R@10", "mAP", "mean_rank")
WEIGHTS = ("1", "0.3", "0.1", "0.03", "0")
SELECT_SPLIT = "train[:3000]"  # the first 3000 training examples
COLOUR = "color_bits"  # the candidate target joined to the shape


def choose(select: dict[str, dict[str, dict[str, float]]]) -> str:
    """The weight (a key of ``select``) with the largest mean of the shape mAP and the
    colour-joined R@1; ties go to the larger weight."""

    def merit(w: str) -> tuple[float, float]:
        r = select[w]
        return (r["shape"]["mAP"] + r["colour"]["R@1"]) / 2, float(w)

    bad = [w for w in select if not math.isfinite(merit(w)[0])]
    if bad:  # NaN compares False: the choice would depend on the weights' order
        raise ValueError(f"score_weight: no finite retrieval score at weight(s) {bad}.")
    return max(select, key=merit)


def derived_dir(run_dir: str) -> str:
    """``SWEEP_score_weight/OBJECTIVE/seed_S`` for ``SWEEP/OBJECTIVE/seed_S``."""
    objective_dir, seed = os.path.split(os.path.abspath(run_dir))
    sweep, objective = os.path.split(objective_dir)
    return os.path.join(f"{sweep}_score_weight", objective, seed)


def _retrieve(embedded: Any, info: Any, base: dict[str, Any], weight: float, colour: str | None):
    from ovaib_jax import evaluators

    kwargs = dict(base)
    kwargs["scorer_kwargs"] = {**dict(base.get("scorer_kwargs") or {}), "product_weight": weight}
    if colour:
        kwargs["candidate_targets"] = (colour,)
    out = evaluators.create("retrieval", kwargs).run(None, embedded, info)
    return {k: float(out[k]) for k in METRICS}, out


def score_weight(
    run_dir: str,
    weights: Sequence[str] = WEIGHTS,
    select_split: str = SELECT_SPLIT,
    colour: str = COLOUR,
) -> dict[str, Any]:
    """Chooses the weight of ``run_dir`` among ``weights`` on ``select_split`` and writes
    its derived run (see the module docstring; ``colour``: the candidate target joined to
    the shape); returns the content of its ``score_weight.json``."""
    from ovaib_jax import evaluate, evaluation, objective, records

    started = time.perf_counter()
    config = evaluate.load_config(None, run_dir)
    base = config.evaluator_kwargs.get("retrieval")
    base = base.to_dict() if base is not None else {}
    restored = evaluation.restore(config, run_dir)
    ev = restored.evaluation([])
    info = objective.run_info(config, restored.resolved, restored.model, restored.variables)
    if "product_weight" not in (info.scorer_kwargs or {}):
        raise ValueError(f"{run_dir}: its scorer takes no product_weight ({info.scorer_kwargs}).")
    numbers: dict[str, dict[str, Any]] = {}
    full: dict[str, Any] = {}
    for role, split in (("select", select_split), ("test", config.dataset.eval_split)):
        embedded = ev.embed(restored.variables, split, (colour,))
        numbers[role] = {}
        for w in weights:
            shape, shape_full = _retrieve(embedded, info, base, float(w), None)
            col, col_full = _retrieve(embedded, info, base, float(w), colour)
            numbers[role][w] = {"shape": shape, "colour": col}
            if role == "test":
                full[w] = (shape_full, col_full)
    chosen = choose(numbers["select"])
    summary = {
        "run": os.path.abspath(run_dir),
        "step": restored.step,
        "trained_product_weight": float(info.scorer_kwargs["product_weight"]),
        "select_split": select_split,
        "chosen": chosen,
        **numbers,
    }
    dest = derived_dir(run_dir)
    os.makedirs(os.path.join(dest, "eval"), exist_ok=True)
    results = records.read_results(run_dir) or {}
    results["retrieval"] = full[chosen][0]
    records.write_json(os.path.join(dest, "results.json"), results, indent=2, sort_keys=True)
    colour_results = {"step": restored.step, "retrieval": full[chosen][1]}
    records.write_json(os.path.join(dest, "eval", "results.json"), colour_results, indent=2)
    summary["seconds"] = time.perf_counter() - started
    for name in ("config.json", "metrics.jsonl", "sweep_run.json"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(dest, name))
    records.write_json(os.path.join(dest, "score_weight.json"), summary, indent=2)
    return summary


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise app.UsageError("Name the run directories (SWEEP/OBJECTIVE/seed_S) to score.")
    remote = [d for d in argv[1:] if "://" in d]
    if remote:
        raise app.UsageError(
            f"{remote[0]}: score_weight.py reads and writes local run directories; copy the "
            "runs (checkpoints, config.json, results.json) to a local directory first."
        )
    for run_dir in argv[1:]:
        if not os.path.exists(os.path.join(run_dir, "results.json")):
            print(f"{run_dir}: not finished (no results.json), skipped")
            continue
        if os.path.exists(os.path.join(derived_dir(run_dir), "score_weight.json")):
            print(f"{run_dir}: done already")
            continue
        summary = score_weight(run_dir, FLAGS.weights, FLAGS.select_split, FLAGS.colour_target)
        sel, test = summary["select"][summary["chosen"]], summary["test"][summary["chosen"]]
        print(
            f"{run_dir}: w = {summary['chosen']} (selection mAP {sel['shape']['mAP']:.3f}, "
            f"colour R@1 {sel['colour']['R@1']:.3f}); test R@1 {test['shape']['R@1']:.3f}, "
            f"mAP {test['shape']['mAP']:.3f}, colour R@1 {test['colour']['R@1']:.3f}"
        )


if __name__ == "__main__":
    flags.DEFINE_list("weights", list(WEIGHTS), "Score weights to try.")
    flags.DEFINE_string("select_split", SELECT_SPLIT, "Split the weight is chosen on.")
    flags.DEFINE_string("colour_target", COLOUR, "Candidate target joined to the shape.")
    FLAGS = flags.FLAGS
    app.run(main)
