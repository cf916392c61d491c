"""Markdown tables of results, with mean ± std over seeds.

Conventions: the std is the *sample* standard deviation (``ddof=1``) over seeds; a
single seed is shown as its value alone (no ``± 0``). Values are multiplied by ``scale``
before formatting (e.g. ``scale=100`` for accuracies in %). Non-finite values are
shown as ``nan``; a missing cell as ``-``.

Example::

    per_seed = [{"acc": 0.95, "mse": 0.01}, {"acc": 0.97, "mse": 0.02}]
    collect(per_seed)                      # {"acc": [0.95, 0.97], "mse": [0.01, 0.02]}
    format_mean_std([0.95, 0.97], scale=100)  # "96.00 ± 1.41"
    seeds_table({"ova_ib": {"VFD": [0.95, 0.97]}, "clip": {"VFD": [0.93, 0.94]}},
                scale=100, best="max")

Sweeps (``python -m ovaib_jax.sweep``): :func:`sweep_report` builds the report of every
objective x seed from their ``results.json`` (:class:`RunRecord`): the downstream table
(rows objectives, columns targets), per-modality decoding, one modality-subset table per
target, one retrieval table per query->candidate pair, MI bounds and wall times.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ovaib_jax.reporting import stats

PM = " ± "


def mean_std(values: Sequence[float], ddof: int = 1) -> tuple[float, float]:
    """``(mean, std)`` of ``values``; std is 0 for a single value (ddof = 1: sample std)."""
    a = np.asarray(values, np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("mean_std: no values.")
    std = float(a.std(ddof=ddof)) if a.size > ddof else 0.0
    return float(a.mean()), std


def format_mean_std(
    values: Sequence[float] | float,
    *,
    digits: int = 2,
    scale: float = 1.0,
    pm: str = PM,
    ddof: int = 1,
) -> str:
    """``"mean ± std"`` of ``values * scale`` with ``digits`` decimals (value alone for
    a single value)."""
    vals = np.atleast_1d(np.asarray(values, np.float64)) * scale
    mean, std = mean_std(vals, ddof=ddof)
    if not math.isfinite(mean):
        return "nan"
    if vals.size == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}{pm}{std:.{digits}f}"


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None
) -> str:
    """A GitHub markdown table. ``align``: per column ``"l"``, ``"r"`` or ``"c"``
    (default: first column left, others right)."""
    ncol = len(header)
    for r in rows:
        if len(r) != ncol:
            raise ValueError(f"markdown_table: row {list(r)} has {len(r)} cells, not {ncol}.")
    if align is None:
        align = ["l"] + ["r"] * (ncol - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(str(h) for h in header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def collect(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """List of flat result dicts (one per seed) -> ``{key: [value per seed]}`` (numeric
    values only; keys missing in some seeds keep the values present)."""
    out: dict[str, list[float]] = {}
    for res in per_seed:
        for k, v in res.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out.setdefault(k, []).append(float(v))
    return out


def _of(value: Any, column: str, default: Any) -> Any:
    """``value[column]`` (default when absent) for a per-column mapping, else ``value``."""
    if isinstance(value, Mapping):
        return value.get(column, default)
    return value


def seeds_table(
    results: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    columns: Sequence[str] | None = None,
    row_header: str = "",
    digits: int | Mapping[str, int] = 2,
    scale: float | Mapping[str, float] = 1.0,
    best: str | Mapping[str, str | None] | None = None,
) -> str:
    """Markdown table of mean ± std over seeds.

    Args:
      results: ``{row: {column: [value per seed]}}``, e.g. rows = objectives,
        columns = tasks.
      columns: column order (default: first appearance).
      row_header: header of the row-label column.
      digits: decimals. scale: multiplies every value.
      best: ``"max"`` or ``"min"``: bold the best mean of each column.
      digits, scale and best may also be ``{column: value}`` mappings (columns absent
      from a mapping get 2 decimals, scale 1, no bold), for tables that mix accuracies
      and errors.

    A cell averaging fewer seeds than the table's fullest cell says so: ``(n=k)``.
    """
    if columns is None:
        columns = list(dict.fromkeys(c for per in results.values() for c in per))
    for c in columns:
        if _of(best, c, None) not in (None, "max", "min"):
            raise ValueError(
                f"seeds_table: best must be 'max', 'min' or None, got {_of(best, c, None)!r}."
            )
    means = {
        (r, c): mean_std(np.asarray(v, np.float64) * _of(scale, c, 1.0))[0]
        for r, per in results.items()
        for c, v in per.items()
        if len(np.atleast_1d(v))
    }
    counts = {(r, c): len(np.atleast_1d(v)) for r, per in results.items() for c, v in per.items()}
    full = max(counts.values(), default=0)
    bests = {}
    for c in columns:
        direction, d = _of(best, c, None), _of(digits, c, 2)
        vals = [m for (r, cc), m in means.items() if cc == c and math.isfinite(m)]
        if direction is not None and vals:
            bests[c] = round(max(vals) if direction == "max" else min(vals), d)
    body = []
    for r, per in results.items():
        cells: list[str] = [str(r)]
        for c in columns:
            if c not in per or not len(np.atleast_1d(per[c])):
                cells.append("-")
                continue
            d = _of(digits, c, 2)
            text = format_mean_std(per[c], digits=d, scale=_of(scale, c, 1.0))
            if c in bests and round(means[(r, c)], d) == bests[c]:
                text = f"**{text}**"
            if counts[(r, c)] < full:
                text += f" (n={counts[(r, c)]})"
            cells.append(text)
        body.append(cells)
    return markdown_table([row_header, *columns], body)


# --------------------------------------------------------------------------- sweeps
#
# A sweep trains every objective with every seed; each run's final evaluation is its
# ``results.json`` (``{"step": N, "<evaluator>": {"<metric>": value}}``). The functions
# below turn ``{objective: [flat results of each seed]}`` into the paper's tables: rows
# objectives, columns tasks, cells mean ± std over seeds, the best in bold.

PerObjective = Mapping[str, Sequence[Mapping[str, float]]]


@dataclasses.dataclass
class RunRecord:
    """One run of a sweep.

    Attributes:
      objective: the objective's name.
      seed: the run's seed.
      workdir: the run's directory.
      results: its ``results.json`` (None when the run failed).
      wall_time_s: wall-clock seconds spent on it by the sweep (all attempts).
      status: ``"ok"`` or ``"failed"``.
      error: the error message of a failed run.
      other_evaluation: the evaluation settings (dotted config keys) in which the run's
        recorded config differs from the sweep's: its results were evaluated with those.
    """

    objective: str
    seed: int
    workdir: str
    results: Mapping[str, Any] | None
    wall_time_s: float
    status: str = "ok"
    error: str = ""
    other_evaluation: tuple[str, ...] = ()


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of metric ``key`` is the better one: an error (MSE), a
    rank, and the R² of a nuisance or style factor (1 = all of it kept, 0 = none: a
    minimal representation, docs/RESULTS.md section 3). Every other metric is better
    higher."""
    parts = key.split("/")
    return parts[-1] in ("mse", "median_rank", "mean_rank") or "nuisance" in parts


def flatten_results(results: Mapping[str, Any]) -> dict[str, float]:
    """``{"downstream": {"label/accuracy": 0.9, "table": "..."}, "step": 10}`` ->
    ``{"downstream/label/accuracy": 0.9}``: numbers of every evaluator (tables and
    top-level entries such as ``step`` dropped)."""
    out: dict[str, float] = {}
    for name, metrics in results.items():
        if not isinstance(metrics, Mapping):
            continue
        for k, v in metrics.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out[f"{name}/{k}"] = float(v)
            elif v is None:  # results.json's null: a NaN (records.dumps writes it so)
                out[f"{name}/{k}"] = float("nan")
    return out


def per_objective(runs: Sequence[RunRecord]) -> dict[str, list[dict[str, float]]]:
    """``{objective: [flat results of each successful seed]}`` in run order."""
    out: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        out.setdefault(r.objective, [])
        if r.results is not None:
            out[r.objective].append(flatten_results(r.results))
    return out


def summarize(per_obj: PerObjective) -> dict[str, dict[str, dict[str, Any]]]:
    """``{objective: {metric: {"mean", "std", "n", "values"}}}`` (sample std, 0 for one
    seed) of every metric found in the flat results."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for obj, seeds in per_obj.items():
        out[obj] = {}
        for key, values in collect(seeds).items():
            mean, std = mean_std(values)
            out[obj][key] = {"mean": mean, "std": std, "n": len(values), "values": values}
    return out


def _grid(per_obj: PerObjective, cells: Mapping[str, str]) -> dict[str, dict[str, list[float]]]:
    """``{objective: {column: [values]}}`` for ``cells = {column: flat metric key}``."""
    out: dict[str, dict[str, list[float]]] = {}
    for obj, seeds in per_obj.items():
        out[obj] = {}
        for column, key in cells.items():
            vals = [r[key] for r in seeds if key in r]
            if vals:
                out[obj][column] = vals
    return out


def _keys(per_obj: PerObjective) -> list[str]:
    return list(dict.fromkeys(k for seeds in per_obj.values() for r in seeds for k in r))


def _task_column(target: str, metric: str) -> tuple[str, float, int, str]:
    """(header, scale, digits, best) of a probe metric: accuracy in %, MSE as is."""
    if metric == "accuracy":
        return f"{target} acc. (%)", 100.0, 2, "max"
    return f"{target} MSE", 1.0, 4, "min"


# ``downstream``'s extra probes (``extra_probes``, ``few_label_per_class``) prefix their
# keys with the probe's name: ``linear/{target}/...``, ``linear_few10/{target}/...``.
_EXTRA_PROBE = re.compile(r"(mlp|linear)(_few\d+)?")


def extra_probes(per_obj: PerObjective, evaluator: str = "downstream") -> list[str]:
    """The extra probe families (``linear``, ``linear_few10``) found in the results."""
    found = (k.split("/") for k in _keys(per_obj))
    return list(
        dict.fromkeys(
            p[1]
            for p in found
            if len(p) == 4 and p[0] == evaluator and _EXTRA_PROBE.fullmatch(p[1])
        )
    )


def downstream_table(
    per_obj: PerObjective, evaluator: str = "downstream", probe: str | None = None
) -> str | None:
    """Rows objectives, columns the probed targets (accuracy % or MSE), best in bold:
    the layout of the paper's main tables. ``probe``: the table of that extra probe
    (keys ``{evaluator}/{probe}/{target}/...``) instead of the main one. None without
    such results."""
    cells, scale, digits, best = {}, {}, {}, {}
    for key in _keys(per_obj):
        parts = key.split("/")
        if probe is not None:
            if len(parts) != 4 or parts[1] != probe:
                continue
            parts = [parts[0], *parts[2:]]
        if len(parts) == 3 and parts[0] == evaluator and parts[2] in ("accuracy", "mse"):
            header, scale[header], digits[header], best[header] = _task_column(*parts[1:])
            cells[header] = key
    if not cells:
        return None
    return seeds_table(
        _grid(per_obj, cells), row_header="objective", scale=scale, digits=digits, best=best
    )


def per_modality_tables(per_obj: PerObjective, evaluator: str = "downstream") -> dict[str, str]:
    """``{target: table}`` for the per-modality targets of ``downstream`` (keys
    ``downstream/{target}/{modality}/r2``): rows objectives, columns modalities and
    their mean, cells R² of decoding the modality's own row of the target (no bold: a
    lower R² on a private nuisance means a more minimal representation)."""
    cells: dict[str, dict[str, str]] = {}
    for key in _keys(per_obj):
        parts = key.split("/")
        if (
            len(parts) == 4
            and parts[0] == evaluator
            and parts[3] == "r2"
            and not _EXTRA_PROBE.fullmatch(parts[1])
        ):
            cells.setdefault(parts[1], {})[parts[2]] = key
    out = {}
    for target, cols in cells.items():
        order = [c for c in cols if c != "mean"] + (["mean"] if "mean" in cols else [])
        out[target] = seeds_table(
            _grid(per_obj, {c: cols[c] for c in order}), row_header="objective", digits=3
        )
    return out


def _subset_size(name: str) -> int:
    return len(name.split("+"))


def subset_scores(
    per_obj: PerObjective, evaluator: str = "modality_subsets"
) -> dict[str, dict[str, str]]:
    """``{target header: {subset: flat key}}`` of the modality-subset probes, subsets by
    size (then first appearance)."""
    found: dict[str, dict[str, str]] = {}
    for key in _keys(per_obj):
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == evaluator and parts[3] in ("accuracy", "mse"):
            header = _task_column(parts[2], parts[3])[0]
            found.setdefault(header, {})[parts[1]] = key
    return {h: {s: cols[s] for s in sorted(cols, key=_subset_size)} for h, cols in found.items()}


def subsets_tables(per_obj: PerObjective, evaluator: str = "modality_subsets") -> dict[str, str]:
    """``{target header: table}``: rows objectives, columns every modality subset (the
    paper's modality-agnostic evaluation), best of each subset in bold."""
    out = {}
    for header, cols in subset_scores(per_obj, evaluator).items():
        acc = header.endswith("(%)")
        out[header] = seeds_table(
            _grid(per_obj, cols),
            row_header="objective",
            scale=100.0 if acc else 1.0,
            digits=2 if acc else 4,
            best="max" if acc else "min",
        )
    return out


RETRIEVAL_METRICS = ("R@1", "R@5", "R@10", "mAP", "median_rank")


def retrieval_keys(
    per_obj: PerObjective, evaluator: str = "retrieval"
) -> dict[str, dict[str, str]]:
    """``{query->candidate pair: {metric: flat key}}`` of the retrieval results."""
    found: dict[str, dict[str, str]] = {}
    for key in _keys(per_obj):
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == evaluator and "->" in parts[1]:
            found.setdefault(parts[1], {})[parts[2]] = key
    order = {m: i for i, m in enumerate(RETRIEVAL_METRICS)}
    return {
        pair: {m: cols[m] for m in sorted(cols, key=lambda m: order.get(m, len(order)))}
        for pair, cols in found.items()
        if any(m in order for m in cols)
    }


def retrieval_tables(per_obj: PerObjective, evaluator: str = "retrieval") -> dict[str, str]:
    """``{pair: table}``: rows objectives, columns R@1, R@5, R@10, mAP, median rank
    (higher is better except the rank), best in bold."""
    out = {}
    for pair, cols in retrieval_keys(per_obj, evaluator).items():
        cols = {m: k for m, k in cols.items() if m in RETRIEVAL_METRICS}
        out[pair] = seeds_table(
            _grid(per_obj, cols),
            row_header="objective",
            digits={m: 1 if m == "median_rank" else 4 for m in cols},
            best={m: "min" if lower_is_better(m) else "max" for m in cols},
        )
    return out


def mi_bounds_table(per_obj: PerObjective, evaluator: str = "mi_bounds") -> str | None:
    """Rows objectives; columns the One-vs-All bound log N - L_m of each modality (a
    common yardstick, best in bold), their mean, the objective's own mean bound (not
    comparable across objectives) and log N, in nats."""
    cells: dict[str, str] = {}
    prefix = f"{evaluator}/ova_mi_bound/"
    keys = _keys(per_obj)
    for key in keys:
        if key.startswith(prefix):
            cells[f"OVA {key[len(prefix) :]}"] = key
    if not cells:
        return None
    if "OVA mean" in cells:  # last among the yardstick columns
        cells["OVA mean"] = cells.pop("OVA mean")
    best = dict.fromkeys(cells, "max")
    for column, key in (("own mean", "mi_bound/mean"), ("log N", "log_n")):
        if f"{evaluator}/{key}" in keys:
            cells[column] = f"{evaluator}/{key}"
    return seeds_table(_grid(per_obj, cells), row_header="objective", digits=3, best=best)


def headline_keys(per_obj: PerObjective) -> list[str]:
    """The metrics a comparison of objectives is about: every probe accuracy of
    ``downstream`` (main and extra probes) and the mean retrieval R@1 and mAP."""
    keys = []
    for key in _keys(per_obj):
        parts = key.split("/")
        if parts[1:2] == [_EMBEDDING_FEATURES]:  # features="embedding": one level more
            parts = parts[:1] + parts[2:]
        if parts[0] == "downstream" and parts[-1] == "accuracy" and len(parts) in (3, 4):
            keys.append(key)
        elif key in ("retrieval/R@1", "retrieval/mAP"):
            keys.append(key)
    return keys


def paired_table(runs: Sequence[RunRecord], reference: str | None = None) -> str | None:
    """Each other objective against ``reference`` (default the sweep's first objective)
    on :func:`headline_keys`, paired by seed: ``reference - objective`` with its paired
    95 % t interval (:func:`ovaib_jax.reporting.stats.paired_t`, which keeps its coverage
    at the few seeds of a sweep) and the verdict ("tie" when the interval covers 0). None
    with fewer than two objectives or two common seeds."""
    by_seed: dict[str, dict[int, dict[str, float]]] = {}
    for r in runs:
        if r.results is not None:
            by_seed.setdefault(r.objective, {})[r.seed] = flatten_results(r.results)
    objectives = list(by_seed)
    if len(objectives) < 2:
        return None
    reference = objectives[0] if reference is None else reference
    body = []
    for key in headline_keys({o: list(v.values()) for o, v in by_seed.items()}):
        for other in objectives:
            if other == reference:
                continue
            seeds = [  # a seed with a NaN on either side (a diverged probe) is left out
                s
                for s in by_seed[reference]
                if s in by_seed[other]
                and math.isfinite(by_seed[reference][s].get(key, math.nan))
                and math.isfinite(by_seed[other][s].get(key, math.nan))
            ]
            if len(seeds) < 2:
                continue
            diff = stats.paired_t(
                [by_seed[reference][s][key] for s in seeds],
                [by_seed[other][s][key] for s in seeds],
            )
            body.append(
                [
                    key,
                    other,
                    f"{diff.mean:+.4f} [{diff.lo:+.4f}, {diff.hi:+.4f}]",
                    stats.verdict(diff, reference, other),
                    len(seeds),
                ]
            )
    if not body:
        return None
    return markdown_table(
        ["metric", "objective", f"{reference} - objective [95 % t interval]", "verdict", "seeds"],
        body,
    )


def wall_time_table(runs: Sequence[RunRecord]) -> str:
    """Rows objectives, columns seeds, cells wall-clock minutes of each run, then the
    mean ± std over seeds."""
    seeds = list(dict.fromkeys(r.seed for r in runs))
    times: dict[str, dict[int, float]] = {}
    for r in runs:
        times.setdefault(r.objective, {})[r.seed] = r.wall_time_s
    body = []
    for obj, per in times.items():
        cells = [obj] + [f"{per[s] / 60:.2f}" if s in per else "-" for s in seeds]
        cells.append(format_mean_std([v / 60 for v in per.values()]))
        body.append(cells)
    return markdown_table(["objective", *(f"seed {s}" for s in seeds), "mean"], body)


# ``downstream`` with ``features="embedding"`` prefixes every key it returns with this.
_EMBEDDING_FEATURES = "embedding"


def downstream_features(per_obj: PerObjective) -> dict[str, PerObjective]:
    """The results split by what the ``downstream`` probes read: ``{"representation":
    ..., "embedding": ...}``, each present only when some run has such keys. The
    ``embedding`` view holds the ``downstream/embedding/...`` keys (``features=
    "embedding"``) with that level removed, so that the downstream tables read them as
    they read probes of the representation; the ``representation`` view holds every
    other key. (A sweep rerun with the other ``features`` keeps its finished runs' keys:
    both views.)"""
    marked = f"downstream/{_EMBEDDING_FEATURES}/"
    plain, on_z = {}, {}
    for obj, seeds in per_obj.items():
        plain[obj] = [{k: v for k, v in r.items() if not k.startswith(marked)} for r in seeds]
        on_z[obj] = [
            {f"downstream/{k[len(marked) :]}": v for k, v in r.items() if k.startswith(marked)}
            for r in seeds
        ]
    views = {"representation": plain, "embedding": on_z}
    return {
        name: view
        for name, view in views.items()
        if any(k.startswith("downstream/") for k in _keys(view))
    }


def _downstream_tables(view: PerObjective, on_z: bool) -> dict[str, str]:
    """The main, extra-probe and per-modality tables of one :func:`downstream_features`
    view, titled for what the probes read."""
    tables: dict[str, str] = {}
    read = "all modalities' embeddings z" if on_z else "all modalities"
    main = downstream_table(view)
    if main is not None:
        tables[f"Downstream probe on {read} (test split)"] = main
    for probe in extra_probes(view):
        name, _, few = probe.partition("_few")
        label = name.capitalize() + (f" probe, {few} labels per class," if few else " probe")
        table = downstream_table(view, probe=probe)
        if table is not None:
            tables[f"{label} on {read} (test split)"] = table
    source = "embedding z" if on_z else "representation"
    for target, table in per_modality_tables(view).items():
        tables[f"Decoding each modality's own `{target}` from its {source} (R²)"] = table
    return tables


def sweep_tables(runs: Sequence[RunRecord]) -> dict[str, str]:
    """Every table of a sweep report, ``{section title: markdown}``, in report order."""
    per_obj = per_objective(runs)
    tables: dict[str, str] = {}
    for name, view in downstream_features(per_obj).items():
        tables.update(_downstream_tables(view, on_z=name == "embedding"))
    for header, table in subsets_tables(per_obj).items():
        tables[f"Modality subsets: {header}"] = table
    for pair, table in retrieval_tables(per_obj).items():
        tables[f"Retrieval {pair}"] = table
    mi = mi_bounds_table(per_obj)
    if mi is not None:
        tables["Mutual-information lower bounds (nats, test split)"] = mi
    paired = paired_table(runs)
    if paired is not None:
        first = next(r.objective for r in runs if r.results is not None)
        tables[f"Paired differences against {first} (t interval over seeds)"] = paired
    tables["Wall time per run (minutes)"] = wall_time_table(runs)
    return tables


def sweep_report(
    runs: Sequence[RunRecord],
    *,
    title: str,
    command: str,
    figures: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The markdown report and the JSON summary of a sweep.

    Args:
      runs: every run (objective x seed), in run order.
      title: the report's title (e.g. the config file).
      command: the exact command line that produced it.
      figures: ``{caption: PNG path relative to the report}``.
      notes: extra lines under the header (e.g. overrides that did not apply).

    Returns:
      ``(markdown, summary)``; summary holds the command, the runs (objective, seed,
      workdir, status, wall time and their flat ``metrics``, None for a run that did not
      finish: each seed's values by seed), ``{objective: {metric: mean, std, n,
      values}}`` (values of the finished seeds, in run order) and the tables.
    """
    objectives = list(dict.fromkeys(r.objective for r in runs))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    tables = sweep_tables(runs)
    finished = {
        o: sum(r.objective == o and r.results is not None for r in runs) for o in objectives
    }
    other = [r for r in runs if r.other_evaluation and r.results is not None]
    if other:
        listed = "; ".join(
            f"{r.objective} seed {r.seed} ({', '.join(r.other_evaluation)})" for r in other
        )
        notes = [
            *notes,
            f"Evaluated with other settings than this command's, which their results keep "
            f"(re-evaluate them with python -m ovaib_jax.evaluate --set=...): {listed}.",
        ]
    if any(n < len(seeds) for n in finished.values()):
        counts = ", ".join(f"{o} {n}" for o, n in finished.items())
        notes = [
            *notes,
            f"Not every run finished (seeds finished: {counts}, of {len(seeds)}): a cell "
            "marked (n=k) is the mean of k seeds, and comparisons across rows are not paired.",
        ]
    lines = [
        f"# Sweep: {title}",
        "",
        "```",
        command,
        "```",
        "",
        f"Objectives: {', '.join(objectives)}. Seeds: {', '.join(map(str, seeds))}. "
        "Cells: mean ± sample std over seeds; the best mean of each column in bold.",
        *(line for n in notes for line in ("", n)),
    ]
    for section, table in tables.items():
        lines += ["", f"## {section}", "", table]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [line for c, path in figures.items() for line in (f"![{c}]({path})", "")]
        lines.pop()
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"* {r.objective}, seed {r.seed}: {r.error}" for r in failed]
    summary = {
        "title": title,
        "command": command,
        "objectives": objectives,
        "seeds": seeds,
        "runs": [
            {
                **{k: v for k, v in dataclasses.asdict(r).items() if k != "results"},
                "finished": r.results is not None,
                "metrics": None if r.results is None else flatten_results(r.results),
            }
            for r in runs
        ],
        "summary": summarize(per_objective(runs)),
        "tables": tables,
        "figures": dict(figures or {}),
    }
    return "\n".join(lines) + "\n", summary
