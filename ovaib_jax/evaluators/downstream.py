"""Downstream probes on frozen representations (SPEC section 5): ``downstream`` on one set
of modalities and ``modality_subsets`` on every non-empty subset (the paper's
modality-agnostic tables). The probe protocol is documented in
:mod:`ovaib_jax.evaluators.probe`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ovaib_jax.evaluators._base import (
    Embedded,
    Evaluator,
    RunInfo,
    TargetInfo,
    check_modalities,
)
from ovaib_jax.evaluators.probe import (
    PROBES,
    ProbeConfig,
    few_label_config,
    few_label_indices,
    fit_probes,
)
from ovaib_jax.reporting import report


def resolve_target(name: str, train: Embedded, test: Embedded) -> TargetInfo:
    """The target's spec (from ``target_specs``, else inferred from both splits)."""
    info = train.target_info(name)
    if name not in train.target_specs and info.kind == "classification":
        top = max(int(train.targets[name].max(initial=0)), int(test.targets[name].max(initial=0)))
        info = dataclasses.replace(info, num_classes=top + 1)
    return info


def _targets(names: Sequence[str] | None, train: Embedded, test: Embedded) -> list[TargetInfo]:
    if names is None:  # per-modality targets are probed by ``per_modality_targets`` only
        names = train.default_targets()
    names = list(names)
    if not names:
        raise ValueError(
            "No targets to probe: the train split carries none (pass target_names= or a "
            "spec to embed_split)."
        )
    for t in names:
        if t not in train.targets or t not in test.targets:
            raise ValueError(
                f"Target {t!r} missing from the train or test split; train has "
                f"{sorted(train.targets)}, test has {sorted(test.targets)}."
            )
    return [resolve_target(t, train, test) for t in names]


def _probe_modalities(
    name: str, modalities: Any, train: Embedded | None, test: Embedded
) -> list[str]:
    """The modalities a probe uses (the config's, or all), checked on both splits."""
    if train is None:
        raise ValueError(f"{name}: needs the train split's representations.")
    mods = list(modalities or train.modality_names)
    _check_modalities(mods, train, test)
    return mods


def _check_modalities(mods: Sequence[str], train: Embedded, test: Embedded) -> None:
    for split, e in (("train", train), ("test", test)):
        missing = [m for m in mods if m not in e.reps]
        if missing:
            raise ValueError(
                f"No {split} representations for modalities {missing}; have {sorted(e.reps)}."
            )


def _metric_names(info: TargetInfo) -> tuple[str, ...]:
    if info.kind == "classification":
        return ("accuracy", "loss", "val_loss", "best_epoch", "epochs")
    return ("mse", "r2", "val_loss", "best_epoch", "epochs")


FEATURES = ("representation", "embedding")


def embeddings_as_features(e: Embedded) -> Embedded:
    """The same split with each modality's embedding z_m (N, d) as its representation."""
    if e.z is None:
        raise ValueError("downstream: features='embedding' needs the split's embeddings z.")
    reps = {m: e.z[i] for i, m in enumerate(e.modality_names)}
    return dataclasses.replace(e, reps=reps)


@dataclasses.dataclass(frozen=True)
class DownstreamConfig(ProbeConfig):
    """``downstream`` config: the :class:`ProbeConfig` keys plus

    Attributes:
      modalities: modality names whose representations are concatenated (None: all).
      targets: target names to probe, one probe each (None: every target of the split
        except per-modality ones and integer arrays of more than one axis, e.g. a
        retrieval candidate target (N, M), which no probe takes). A stored example key
        that the dataset does not declare as a target (e.g. ``ovaib_latent``'s ``shared``
        factor) may be named: it is read as a regression target.
      per_modality_targets: stored keys of shape (M, k) per example, row m private to
        modality m (``ovaib_latent``'s and ``mnist_views``' ``nuisance``): for each
        modality m a regression probe from m's OWN representation to row m (see
        :class:`Downstream`). Empty: none.
      features: what the probes read: ``"representation"`` (the encoders' outputs, the
        paper's protocol) or ``"embedding"`` (each modality's projection-head embedding
        z_m, which the objectives act on directly; e.g. the minimality term's effect on
        what z_m keeps). With ``"embedding"`` every result key is prefixed ``embedding/``.
      extra_probes: probe kinds (of ``probe``'s values, e.g. ``("linear",)``) also fitted
        on the same features and targets, with the same hyper-parameters and seed; results
        under ``{probe}/{target}/{metric}`` (the main probe's keys are unchanged). A
        linear probe beside the MLP shows differences that a saturated MLP hides.
      few_label_per_class: when > 0, each extra probe is also fitted on
        ``few_label_per_class`` train examples per class
        (:func:`~ovaib_jax.evaluators.probe.few_label_indices`, seeded by the run's seed)
        of every classification target (regression targets: skipped, no key), without a
        validation hold-out (``val_loss`` is NaN, null in results.json) and with at least
        ``probe.FEW_LABEL_MIN_STEPS`` steps; results under
        ``{probe}_few{k}/{target}/{metric}``. 0: off.
    """

    modalities: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    per_modality_targets: tuple[str, ...] = ()
    features: str = "representation"
    extra_probes: tuple[str, ...] = ()
    few_label_per_class: int = 0

    def __post_init__(self):
        super().__post_init__()
        if self.features not in FEATURES:
            raise ValueError(
                f"downstream: features must be one of {FEATURES}, got {self.features!r}."
            )
        extra = self.extra_probes
        extra = tuple(p for p in extra.split(",") if p) if isinstance(extra, str) else tuple(extra)
        object.__setattr__(self, "extra_probes", extra)
        bad = [p for p in extra if p not in PROBES]
        if bad:
            raise ValueError(
                f"downstream: extra_probes has unknown probe(s) {bad}; valid probes: {PROBES}."
            )
        if len(set(extra)) != len(extra):
            raise ValueError(f"downstream: extra_probes has duplicate entries: {extra}.")
        k = self.few_label_per_class
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(
                f"downstream: few_label_per_class must be an integer >= 0 (0: off), got {k!r}."
            )
        object.__setattr__(self, "few_label_per_class", int(k))
        if k and not extra:
            raise ValueError(
                f"downstream: few_label_per_class={k} needs extra_probes (the probes it "
                "fits on few labels), e.g. extra_probes=('linear',); or set it to 0."
            )


class Downstream(Evaluator):
    """Probe on the concatenated frozen representations of the chosen modalities.

    Results (per target ``t``): classification ``t/accuracy`` (fraction in [0, 1]),
    ``t/loss`` (test cross-entropy); regression ``t/mse`` (target units), ``t/r2``; and
    ``t/val_loss``, ``t/best_epoch``, ``t/epochs``. ``objective`` is ignored. Each of
    ``extra_probes`` ``p`` adds the same metrics as ``p/t/...``, and with
    ``few_label_per_class = k`` the few-label fit of each classification target as
    ``p_few{k}/t/...`` (e.g. ``linear/label/accuracy``, ``linear_few10/label/accuracy``).

    Per-modality targets ``t`` (``per_modality_targets``; how much of a modality's
    private factor its representation keeps, i.e. how far from *minimal* it is):
    ``t/{modality}/r2`` and ``t/{modality}/mse`` for each modality, and their means
    over modalities ``t/mean/r2``, ``t/mean/mse``. The target columns are standardised
    with the train split's mean and std first (columns constant in train are dropped),
    so ``mse`` is the fraction of variance left unexplained and ``r2`` (pooled over the
    standardised columns) is close to the mean of the per-column R²: 0 = nothing
    decodable, 1 = fully decodable.
    """

    name = "downstream"
    Config = DownstreamConfig

    def extra_keys(self) -> tuple[str, ...]:
        return tuple(self.config.targets or ()) + tuple(self.config.per_modality_targets)

    def check(self, modality_names: Sequence[str]) -> None:
        check_modalities(self.name, self.config.modalities, modality_names)

    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        seed = info.seed
        cfg = self.config
        if cfg.features == "embedding" and train is not None:
            train, test = embeddings_as_features(train), embeddings_as_features(test)
        mods = _probe_modalities(self.name, cfg.modalities, train, test)
        x_tr, x_te = train.features(mods), test.features(mods)
        out: dict[str, Any] = {}
        extra = [dataclasses.replace(cfg.probe_only(), probe=p) for p in cfg.extra_probes]
        k = cfg.few_label_per_class
        for info in _targets(cfg.targets, train, test):
            y_tr, y_te = train.targets[info.name], test.targets[info.name]
            (r,) = fit_probes(x_tr, y_tr, x_te, y_te, info, cfg, seed)
            out.update({f"{info.name}/{m}": v for m, v in r.items()})
            for pcfg in extra:
                (r,) = fit_probes(x_tr, y_tr, x_te, y_te, info, pcfg, seed)
                out.update({f"{pcfg.probe}/{info.name}/{m}": v for m, v in r.items()})
            if k and info.kind == "classification":
                idx = few_label_indices(y_tr, k, seed)
                for pcfg in extra:
                    fcfg = few_label_config(pcfg, len(idx))
                    (r,) = fit_probes(x_tr[idx], y_tr[idx], x_te, y_te, info, fcfg, seed)
                    out.update({f"{pcfg.probe}_few{k}/{info.name}/{m}": v for m, v in r.items()})
        for name in cfg.per_modality_targets:
            out.update(per_modality_probes(name, mods, train, test, cfg, seed))
        prefix = "embedding/" if cfg.features == "embedding" else ""
        return {prefix + k: v for k, v in out.items()}


def per_modality_probes(
    name: str,
    modalities: Sequence[str],
    train: Embedded,
    test: Embedded,
    cfg: DownstreamConfig,
    seed: int,
) -> dict[str, float]:
    """Decodes row m of the per-modality target ``name`` from modality m's representation.

    Returns ``{name}/{modality}/{r2,mse}`` and ``{name}/mean/{r2,mse}`` (see
    :class:`Downstream`).
    """
    for split, e in (("train", train), ("test", test)):
        if name not in e.targets or not e.per_modality(name):
            have = {k: v.shape for k, v in e.targets.items()}
            raise ValueError(
                f"downstream: per-modality target {name!r} must be a stored (N, M, k) array "
                f"in the {split} split; it has {have}."
            )
    y_tr = np.asarray(train.targets[name], np.float64)
    y_te = np.asarray(test.targets[name], np.float64)
    if y_tr.shape[1] != train.num_modalities:
        raise ValueError(
            f"downstream: per-modality target {name!r} has {y_tr.shape[1]} rows per example, "
            f"not one per modality ({train.modality_names})."
        )
    out: dict[str, float] = {}
    for mod in modalities:
        m = train.modality_index(mod)
        mean, std = y_tr[:, m].mean(0), y_tr[:, m].std(0)
        keep = std > 1e-8
        if not keep.any():
            continue
        ya = ((y_tr[:, m] - mean) / np.where(keep, std, 1.0))[:, keep]
        yb = ((y_te[:, m] - mean) / np.where(keep, std, 1.0))[:, keep]
        info = TargetInfo(f"{name}[{mod}]", "regression", dim=int(keep.sum()))
        (r,) = fit_probes(
            train.features([mod]), ya, test.features([mod]), yb, info, cfg.probe_only(), seed
        )
        out[f"{name}/{mod}/r2"] = r["r2"]
        out[f"{name}/{mod}/mse"] = r["mse"]
    for metric in ("r2", "mse"):
        vals = [v for k, v in out.items() if k.endswith(f"/{metric}")]
        if vals:
            out[f"{name}/mean/{metric}"] = float(np.mean(vals))
    return out


def subsets(names: Sequence[str], max_size: int | None = None) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``names`` (up to ``max_size``), by size then in order."""
    top = len(names) if max_size is None else max_size
    return [c for k in range(1, top + 1) for c in itertools.combinations(names, k)]


def subset_name(subset: Sequence[str]) -> str:
    """``("resp", "ecg") -> "resp+ecg"``."""
    return "+".join(subset)


@dataclasses.dataclass(frozen=True)
class ModalitySubsetsConfig(ProbeConfig):
    """``modality_subsets`` config: the :class:`ProbeConfig` keys plus

    Attributes:
      targets: target names (None: every target of the split except per-modality ones
        and integer arrays of more than one axis, e.g. retrieval candidate targets).
      modalities: the modalities to combine (None: all of the split's).
      batch_subsets: train the probes of all subsets of equal feature width in one
        vmapped compiled call (False: one call per subset; same protocol).
      max_stack: at most this many subsets per vmapped call (bounds the memory of the
        stacked features, S x N x width; None: no limit).
      table_digits: decimals of the accuracy (%) cells of the table; MSE cells get
        ``table_digits + 2`` decimals.
    """

    targets: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None
    batch_subsets: bool = True
    max_stack: int | None = None
    table_digits: int = 2


class ModalitySubsets(Evaluator):
    """The downstream probe for every non-empty subset of modalities (2^M - 1 rows).

    Results: ``{subset}/{target}/{metric}`` with the metrics of ``downstream`` (subset
    names join modality names with ``+``, e.g. ``rgb+force``), and ``table``: a markdown
    table, rows = subsets (by size, then in modality order), columns = targets, cells
    test accuracy in % (classification) or test MSE (regression), like the paper's
    modality-agnostic tables. Probes of subsets whose concatenated features have the
    same width are trained together (one compiled, vmapped call per width and target),
    with the same seed as a single ``downstream`` run on that subset.
    """

    name = "modality_subsets"
    Config = ModalitySubsetsConfig

    def extra_keys(self) -> tuple[str, ...]:
        return tuple(self.config.targets or ())

    def check(self, modality_names: Sequence[str]) -> None:
        check_modalities(self.name, self.config.modalities, modality_names)

    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        seed = info.seed
        cfg = self.config
        mods = _probe_modalities(self.name, cfg.modalities, train, test)
        rows = subsets(mods)
        infos = _targets(cfg.targets, train, test)
        widths = {m: train.reps[m].shape[1] for m in mods}
        groups: dict[Any, list[tuple[str, ...]]] = {}
        for s in rows:
            key = sum(widths[m] for m in s) if cfg.batch_subsets else len(groups)
            groups.setdefault(key, []).append(s)
        if cfg.max_stack:
            step = max(1, cfg.max_stack)
            groups = {
                (k, i): g[i : i + step] for k, g in groups.items() for i in range(0, len(g), step)
            }
        per: dict[tuple[str, ...], dict[str, dict[str, float]]] = {s: {} for s in rows}
        for group in groups.values():
            x_tr = np.stack([train.features(s) for s in group])
            x_te = np.stack([test.features(s) for s in group])
            for info in infos:
                res = fit_probes(
                    x_tr, train.targets[info.name], x_te, test.targets[info.name], info, cfg, seed
                )
                for s, r in zip(group, res):
                    per[s][info.name] = r
        out: dict[str, Any] = {}
        for s in rows:
            for t, r in per[s].items():
                out.update({f"{subset_name(s)}/{t}/{k}": v for k, v in r.items()})
        out["table"] = subsets_table(
            {subset_name(s): per[s] for s in rows}, infos, digits=cfg.table_digits
        )
        return out


def subsets_table(
    per_subset: dict[str, dict[str, dict[str, float]]],
    infos: Sequence[TargetInfo],
    *,
    digits: int = 2,
) -> str:
    """Markdown table: rows = subsets, columns = targets (accuracy % or MSE)."""
    header = ["modalities"] + [
        f"{i.name} acc. (%)" if i.kind == "classification" else f"{i.name} MSE" for i in infos
    ]
    body = []
    for s, per_t in per_subset.items():
        cells = [s]
        for i in infos:
            r = per_t[i.name]
            if i.kind == "classification":
                cells.append(f"{100.0 * r['accuracy']:.{digits}f}")
            else:
                cells.append(f"{r['mse']:.{digits + 2}f}")
        body.append(cells)
    return report.markdown_table(header, body)
