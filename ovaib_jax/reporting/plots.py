"""Figures as PNG files, drawn with matplotlib's Agg canvas (no pyplot, no display, no
global backend switch, so it is safe in scripts, tests and threads).

* :func:`plot_training_curves`: scalars of ``metrics.jsonl`` files against ``step``.
* :func:`plot_subset_heatmap`: objectives x modality subsets (accuracy or MSE).
* :func:`plot_retrieval_bars`: grouped bars of retrieval metrics, with std error bars
  when values are given per seed.
* :func:`plot_embedding_pca`: 2-D PCA (numpy SVD) of embeddings coloured by label.
* :func:`sweep_figures`: all of the above for a sweep (``python -m ovaib_jax.sweep``).

Every function returns the path written. matplotlib is imported on the first figure
drawn, not with the module: the trainer imports this package (through the evaluators)
and never draws, and matplotlib is about 0.4 s of every start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ovaib_jax import paths
from ovaib_jax.records import METRICS_FILE, read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = str | os.PathLike


def _figure(**kwargs: Any) -> Figure:
    """A new matplotlib Figure (matplotlib imported here, on first use)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Figure, out_path: PathLike, dpi: int = 120) -> str:
    """Writes ``fig`` as a PNG to ``out_path`` (local or ``gs://``)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out_path = os.fspath(out_path)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    paths.write_bytes(out_path, buffer.getvalue())
    return out_path


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    head = np.array([y[: i + 1].mean() for i in range(window - 1)])
    return np.concatenate([head, np.convolve(y, kernel, mode="valid")])


def _curve(paths: Sequence[PathLike], key: str) -> tuple[np.ndarray, ...] | None:
    """(steps, mean, min, max) of ``key`` over runs, on the steps every run logged."""
    series = []
    for path in paths:
        pts = {r["step"]: r[key] for r in read_metrics(path) if key in r and "step" in r}
        if pts:
            series.append(pts)
    if not series:
        return None
    steps = sorted(set.intersection(*(set(p) for p in series)))
    if not steps:
        return None
    y = np.asarray([[p[s] for s in steps] for p in series], np.float64)
    return np.asarray(steps, np.float64), y.mean(0), y.min(0), y.max(0)


def plot_training_curves(
    runs: Mapping[str, PathLike | Sequence[PathLike]] | Sequence[PathLike],
    out_path: PathLike,
    *,
    keys: Sequence[str] = ("loss",),
    smooth: int = 1,
    title: str = "",
) -> str:
    """One panel per metric key, one line per run (x = ``step``).

    Args:
      runs: ``{label: metrics.jsonl path}`` or paths (labelled by their directory); a
        label may map to several paths (e.g. the seeds of one objective): their mean is
        drawn, with the min-max band, on the steps they all logged.
      out_path: PNG path.
      keys: metric names to plot (records without a key are skipped for that key).
      smooth: moving-average window (1: raw).
      title: figure title.
    """
    if not isinstance(runs, Mapping):
        files = [os.fspath(p) for p in runs]
        labels = [os.path.basename(os.path.dirname(p)) or p for p in files]
        if len(set(labels)) < len(labels):  # ambiguous directory names: full paths
            labels = files
        runs = dict(zip(labels, files))
    fig = _figure(figsize=(4.5 * len(keys), 3.4))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for label, group in runs.items():
        group = [group] if isinstance(group, str | os.PathLike) else list(group)
        for ax, key in zip(axes, keys):
            curve = _curve(group, key)
            if curve is None:
                continue
            x, mean, lo, hi = curve
            (line,) = ax.plot(x, _smooth(mean, smooth), label=str(label), lw=1.2)
            if len(group) > 1:
                ax.fill_between(
                    x, _smooth(lo, smooth), _smooth(hi, smooth), color=line.get_color(), alpha=0.2
                )
    for ax, key in zip(axes, keys):
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, out_path)


def plot_subset_heatmap(
    scores: Mapping[str, Mapping[str, float]],
    out_path: PathLike,
    *,
    subsets: Sequence[str] | None = None,
    title: str = "",
    fmt: str = ".1f",
    scale: float = 1.0,
    higher_is_better: bool = True,
) -> str:
    """Heatmap, rows = objectives, columns = modality subsets, one number per cell.

    Args:
      scores: ``{objective: {subset: value}}`` (e.g. accuracy, or MSE).
      out_path: PNG path.
      subsets: column order (default: first appearance).
      title: figure title. fmt: cell number format. scale: multiplies values.
      higher_is_better: colour map direction (bright = better).
    """
    rows = list(scores)
    cols = list(subsets or dict.fromkeys(s for per in scores.values() for s in per))
    grid = np.full((len(rows), len(cols)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if c in scores[r]:
                grid[i, j] = float(scores[r][c]) * scale
    fig = _figure(figsize=(max(4.0, 0.9 * len(cols) + 2), max(2.5, 0.5 * len(rows) + 1.5)))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="viridis" if higher_is_better else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                bright = (grid[i, j] > mid) == higher_is_better
                ax.text(
                    j,
                    i,
                    format(grid[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if bright else "white",
                )
    fig.colorbar(im, ax=ax)
    if title:
        ax.set_title(title)
    return _save(fig, out_path)


def plot_retrieval_bars(
    results: Mapping[str, Mapping[str, float | Sequence[float]]],
    out_path: PathLike,
    *,
    metrics: Sequence[str] | None = None,
    title: str = "",
) -> str:
    """Grouped bars: groups = metrics (e.g. ``R@1``, ``mAP``), one bar per objective.

    Args:
      results: ``{objective: {metric: value or [value per seed]}}``; per-seed lists are
        drawn as mean with a sample-std error bar.
      out_path: PNG path.
      metrics: metric order (default: first appearance).
      title: figure title.
    """
    labels = list(results)
    metrics = list(metrics or dict.fromkeys(k for per in results.values() for k in per))
    width = 0.8 / max(1, len(labels))
    fig = _figure(figsize=(max(4.0, 1.2 * len(metrics) + 2), 3.4))
    ax = fig.subplots()
    x = np.arange(len(metrics))
    for i, label in enumerate(labels):
        means, stds = [], []
        for m in metrics:
            v = np.atleast_1d(np.asarray(results[label].get(m, np.nan), np.float64))
            means.append(v.mean())
            stds.append(v.std(ddof=1) if v.size > 1 else 0.0)
        ax.bar(
            x + (i - (len(labels) - 1) / 2) * width, means, width, yerr=stds, label=label, capsize=2
        )
    ax.set_xticks(x, metrics)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, out_path)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the rows of ``x`` (n, d) -> (n, 2), by SVD of
    the centred matrix (signs fixed so each component's largest loading is positive)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    out = xc @ comps.T
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


def _label_colours(labels: np.ndarray | None) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Colours of the points by label: up to 20 classes one distinct colour each (tab10,
    then tab20: a cyclic colour map reused colours past 10 classes), more a continuous
    map. Returns (values for ``scatter(c=...)``, keyword arguments of the scatter and the
    colour bar, and the class names of the bar's ticks)."""
    if labels is None:
        return None, {"scatter": {}, "colorbar": {}}
    classes = np.unique(labels)
    if len(classes) > 20 or (labels.dtype.kind == "f" and len(classes) > 10):
        return labels, {"scatter": {"cmap": "viridis"}, "colorbar": {}}
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap

    k = len(classes)
    base = colormaps["tab10" if k <= 10 else "tab20"]
    cmap = ListedColormap([base(i) for i in range(k)])
    norm = BoundaryNorm(np.arange(k + 1) - 0.5, k)
    index = np.searchsorted(classes, labels)
    return index, {
        "scatter": {"cmap": cmap, "norm": norm},
        "colorbar": {"ticks": np.arange(k)},
        "ticklabels": [str(c) for c in classes],
    }


def plot_embedding_pca(
    z: np.ndarray,
    labels: np.ndarray | None,
    out_path: PathLike,
    *,
    modality_names: Sequence[str] | None = None,
    max_points: int = 2000,
    seed: int = 0,
    title: str = "",
) -> str:
    """Scatter of a joint 2-D PCA of test embeddings, coloured by label.

    Args:
      z: (N, d) or (M, N, d) embeddings; with M modalities all M*N points share one PCA
        and each modality gets its own marker.
      labels: (N,) class labels (colour), or None.
      out_path: PNG path.
      modality_names: legend names of the M modalities.
      max_points: at most this many samples (seeded subsample), for readability.
      seed: subsampling seed. title: figure title.
    """
    z = np.asarray(z, np.float64)
    if z.ndim == 2:
        z = z[None]
    if z.ndim != 3:
        raise ValueError(f"plot_embedding_pca: z must be (N, d) or (M, N, d), got {z.shape}.")
    m, n, d = z.shape
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    proj = pca_2d(z[:, keep].reshape(-1, d)).reshape(m, len(keep), 2)
    names = list(modality_names or [f"m{i}" for i in range(m)])
    fig = _figure(figsize=(5.0, 4.2))
    ax = fig.subplots()
    colour, style = _label_colours(None if labels is None else np.asarray(labels).reshape(n)[keep])
    sc = None
    for i in range(m):
        sc = ax.scatter(
            proj[i, :, 0],
            proj[i, :, 1],
            c=colour,
            marker=_MARKERS[i % len(_MARKERS)],
            s=10,
            alpha=0.7,
            label=names[i],
            **style["scatter"],
        )
    if m > 1:
        ax.legend(fontsize=7, markerscale=1.5)
    if colour is not None and sc is not None:
        bar = fig.colorbar(sc, ax=ax, label="label", **style["colorbar"])
        if "ticklabels" in style:
            bar.set_ticklabels(style["ticklabels"])
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if title:
        ax.set_title(title)
    return _save(fig, out_path)


def _file_name(text: str) -> str:
    """A file-name-safe form of a pair or target name (``"a+b->c"`` -> ``"a_b_to_c"``)."""
    text = text.replace("->", "_to_").replace("+", "_")
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in text).strip("_")


def sweep_figures(
    runs: Sequence[Any],
    out_dir: PathLike,
    *,
    embeddings: Mapping[str, tuple[np.ndarray, np.ndarray | None, Sequence[str]]] | None = None,
) -> dict[str, str]:
    """The figures of a sweep report, written into ``out_dir``.

    Args:
      runs: the sweep's ``report.RunRecord`` list.
      out_dir: where the PNGs go (next to the report).
      embeddings: ``{objective: (z (M, N, d), labels (N,) or None, modality names)}``
        of one run per objective, for the PCA plots.

    Returns:
      ``{caption: file name}`` (relative to ``out_dir``): training curves (one line per
      objective, mean and min-max band over seeds), one subset heatmap per target, one
      retrieval bar chart per pair, one PCA scatter per objective.
    """
    from ovaib_jax.reporting import report

    out_dir = os.fspath(out_dir)
    figures: dict[str, str] = {}
    metrics = {}
    for r in runs:  # finished runs only: a diverged or stopped one would cut every curve
        # short (the steps all runs logged) or make its mean NaN
        if r.results is None:
            continue
        path = paths.join(r.workdir, METRICS_FILE)
        if paths.exists(path):
            metrics.setdefault(r.objective, []).append(path)
    if metrics:
        present = {
            k for paths in metrics.values() for p in paths for rec in read_metrics(p) for k in rec
        }
        keys = [
            k
            for k in ("train/loss", "train/accuracy", "eval/inbatch_retrieval/top1")
            if k in present
        ]
        if keys:
            name = "curves.png"
            plot_training_curves(metrics, paths.join(out_dir, name), keys=keys)
            figures["training curves of the finished runs (mean and min-max over seeds)"] = name
    per_obj = report.per_objective(runs)
    summary = report.summarize(per_obj)
    for header, cols in report.subset_scores(per_obj).items():
        scores = {
            obj: {s: summary[obj][k]["mean"] for s, k in cols.items() if k in summary[obj]}
            for obj in per_obj
        }
        acc = header.endswith("(%)")
        name = f"subsets_{_file_name(header.split(' ')[0])}.png"
        plot_subset_heatmap(
            scores,
            paths.join(out_dir, name),
            title=header,
            scale=100.0 if acc else 1.0,
            fmt=".1f" if acc else ".3g",
            higher_is_better=acc,
        )
        figures[f"modality subsets: {header}"] = name
    for pair, cols in report.retrieval_keys(per_obj).items():
        bars = {
            obj: {
                m: summary[obj][k]["values"]
                for m, k in cols.items()
                if (m.startswith("R@") or m == "mAP") and k in summary[obj]  # [0, 1] scale
            }
            for obj in per_obj
        }
        name = f"retrieval_{_file_name(pair)}.png"
        plot_retrieval_bars(bars, paths.join(out_dir, name), title=f"retrieval {pair}")
        figures[f"retrieval {pair}"] = name
    for obj, (z, labels, names) in (embeddings or {}).items():
        name = f"pca_{_file_name(obj)}.png"
        plot_embedding_pca(
            z, labels, paths.join(out_dir, name), modality_names=names, title=f"{obj}: test z"
        )
        figures[f"PCA of the test embeddings: {obj}"] = name
    return figures
