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
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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


def seeds_table(
    results: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    columns: Sequence[str] | None = None,
    row_header: str = "",
    digits: int = 2,
    scale: float = 1.0,
    best: str | None = None,
) -> str:
    """Markdown table of mean ± std over seeds.

    Args:
      results: ``{row: {column: [value per seed]}}``, e.g. rows = objectives,
        columns = tasks.
      columns: column order (default: first appearance).
      row_header: header of the row-label column.
      digits: decimals. scale: multiplies every value.
      best: ``"max"`` or ``"min"``: bold the best mean of each column.
    """
    if best not in (None, "max", "min"):
        raise ValueError(f"seeds_table: best must be 'max', 'min' or None, got {best!r}.")
    if columns is None:
        columns = list(dict.fromkeys(c for per in results.values() for c in per))
    means = {
        (r, c): mean_std(np.asarray(v, np.float64) * scale)[0]
        for r, per in results.items()
        for c, v in per.items()
        if len(np.atleast_1d(v))
    }
    bests = {}
    if best is not None:
        for c in columns:
            vals = [m for (r, cc), m in means.items() if cc == c and math.isfinite(m)]
            if vals:
                bests[c] = round(max(vals) if best == "max" else min(vals), digits)
    body = []
    for r, per in results.items():
        cells: list[str] = [str(r)]
        for c in columns:
            if c not in per or not len(np.atleast_1d(per[c])):
                cells.append("-")
                continue
            text = format_mean_std(per[c], digits=digits, scale=scale)
            if c in bests and round(means[(r, c)], digits) == bests[c]:
                text = f"**{text}**"
            cells.append(text)
        body.append(cells)
    return markdown_table([row_header, *columns], body)
