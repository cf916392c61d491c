"""The tables of docs/RESULTS.md, from the run directories of the sweeps that made them.

    python scripts/results_tables.py --root /tmp/res [--json docs/results/tables.json]

``--root`` holds one directory per sweep (the ``--workdir`` of each command listed in
docs/RESULTS.md), each with ``<objective>/seed_<seed>/results.json`` (the trainer's
final evaluation), optionally ``eval/results.json`` beside it (a later
``python -m ovaib_jax.evaluate`` of the same checkpoint, e.g. with other evaluator
kwargs) and ``sweep_run.json`` (wall time). Prints every table as markdown, mean ± std
over seeds (sample std), with the number of seeds and the mean wall time per run, and
writes every value per seed to ``--json`` (per row: ``seeds``, ``wall s/run`` and each
column's values in that seed order, null where a run lacks the metric). A row whose runs
are missing is printed as "not run", so a partial set of sweeps still gives the tables it
can.

``--archive FILE`` (repeatable) reads such a ``--json`` file back: a seed of a row that
has no run under ``--root`` takes its published values from there. New rows or seeds can
then join a published table, its comparisons and their paired intervals, without the run
directories of the rows already published (which hold checkpoints and are not kept).

``--update FILE`` rewrites, in FILE, the text between ``<!-- table: TITLE -->`` and
``<!-- end table -->`` with the table of that title, for the tables that have at least
one run directory under --root (the others keep their text).

A :class:`Comparison` prints, per metric, "A - B" over the seeds both rows ran, with its
paired Student t 95 % interval (``ovaib_jax.reporting.stats.paired_t``) and the verdict:
"A better", "B better" or "tie" when the interval covers 0. ``--interval bootstrap``
renders the percentile bootstrap the tables used before 2026-12-02 instead; at 3 to 5 seeds
it is far narrower than its 95 % label (docs/RESULTS.md's note on the intervals).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ovaib_jax.reporting import stats
from ovaib_jax.reporting.report import lower_is_better

# The paired interval of comparisons, against-best and retention tests: the paired t
# interval (the published tables), or (--interval bootstrap) the percentile bootstrap they
# used before 2026-12-02, which covers far less than 95 % at 3-5 seeds (tests/test_stats.py).
INTERVALS = {"bootstrap": stats.paired_bootstrap, "t": stats.paired_t}
PAIRED = stats.paired_t


@dataclass(frozen=True)
class Row:
    label: str
    sweep: str  # directory under --root
    objective: str


@dataclass(frozen=True)
class Table:
    title: str
    rows: tuple[Row, ...]
    metrics: tuple[tuple[str, str], ...]  # (column label, metric key)
    digits: int = 3


OBJECTIVES = (
    "ova_ib",
    "symile",
    "gram",
    "triangle",
    "pairwise_clip",
    "pairwise_clip_ib",
    "anchor_clip",
)


def _objective_rows(
    sweep: str, ablations: Sequence[tuple[str, str]] = (), m: int = 3
) -> tuple[Row, ...]:
    rows = [Row(o, sweep, o) for o in OBJECTIVES if o != "triangle" or m == 3]
    rows[1:1] = [Row(label, s, "ova_ib") for label, s in ablations]
    return tuple(rows)


def parity_table(m: int) -> Table:
    rest = "+".join(f"x{i}" for i in range(m - 1))
    pair = f"{rest}->x{m - 1}"
    return Table(
        title=f"parity M = {m}, p = 1 (chance R@1 = 0.25)",
        rows=_objective_rows(
            f"parity_m{m}",
            [
                ("ova_ib beta = 1 (ablation)", f"parity_m{m}_beta1"),
                ("ova_ib + MLP projector (ablation)", f"parity_m{m}_mlp"),
                ("ova_ib + product projector (extension)", f"parity_m{m}_product"),
                ("ova_ib span + product score (extension)", f"parity_m{m}_span_product"),
            ],
            m,
        ),
        metrics=(
            (f"R@1 {pair}", f"retrieval/{pair}/R@1"),
            ("mAP", f"retrieval/{pair}/mAP"),
            ("probe acc. (all modalities)", "downstream/label/accuracy"),
        ),
    )


def p_sweep_table() -> Table:
    rows = []
    for p in ("0.9", "0.75", "0.5"):
        for o in OBJECTIVES:
            rows.append(Row(f"p = {p}: {o}", f"parity_m3_p{p}", o))
    return Table(
        title=(
            "parity M = 3, p < 1 (with probability 1 - p the last modality copies x0; "
            "best achievable R@1 p + (1 - p) / 4: 0.925 at p = 0.9, 0.8125 at p = 0.75, "
            "0.625 at p = 0.5)"
        ),
        rows=tuple(rows),
        metrics=(
            ("R@1 x0+x1->x2", "retrieval/x0+x1->x2/R@1"),
            ("mAP", "retrieval/x0+x1->x2/mAP"),
            ("probe acc. (all modalities)", "downstream/label/accuracy"),
        ),
    )


LATENT_METRICS = (
    ("label acc.", "downstream/label/accuracy"),
    ("target R²", "downstream/target/r2"),
    ("synergy acc. (chance 0.25)", "downstream/synergy_label/accuracy"),
    ("nuisance R² (representation)", "downstream/nuisance/mean/r2"),
    ("nuisance R² (embedding z)", "eval:downstream/embedding/nuisance/mean/r2"),
    ("retrieval R@1 (mean over modalities)", "retrieval/R@1"),
)


LATENT_BETAS = ("0", "0.1", "0.5", "1", "2")


@dataclass(frozen=True)
class Comparison:
    """A against B, paired by seed, on each metric (the verdict follows each metric's
    direction, :func:`lower_is_better`)."""

    title: str
    a: Row
    b: Row
    metrics: tuple[tuple[str, str], ...]
    digits: int = 3


@dataclass(frozen=True)
class AgainstBest:
    """A candidate against, per metric, the best of ``others`` (the highest mean over the
    seeds it shares with the candidate): is it best or statistically tied with the best
    (issue 13 section 6's criterion)? ``others`` are the baselines; the trifeature tables
    leave the other candidate out of each candidate's list."""

    title: str
    candidate: Row
    others: tuple[Row, ...]
    metrics: tuple[tuple[str, str], ...]
    digits: int = 3


@dataclass(frozen=True)
class Retention:
    """Does ``candidate`` keep at least ``fraction`` of ``reference``'s value on each
    metric (issue 13 section 6: 95 % of the projection's retrieval)? Tested on the paired
    differences candidate - fraction x reference."""

    title: str
    candidate: Row
    reference: Row
    metrics: tuple[tuple[str, str], ...]
    fraction: float = 0.95
    digits: int = 3


# The beta sweeps at the paper's tau = 0.01 (issue 13 section 2): beta = 0, 0.1, 0.5 and the
# paper's 1, 5 seeds (the tau = 0.1 rows are in the earlier tables, 3 seeds).
TAU_BETAS = ("0", "0.1", "0.5", "1")
TAU_SETTINGS = (
    # (title prefix, sweep prefix, metrics)
    (
        "ovaib_latent M = 3",
        "latent",
        LATENT_METRICS,
    ),
    (
        "ovaib_latent M = 5",
        "latent_m5",
        LATENT_METRICS,
    ),
    (
        "mfeat",
        "mfeat",
        (
            ("probe acc. (all views)", "downstream/label/accuracy"),
            ("retrieval R@1 (mean over views)", "retrieval/R@1"),
            ("retrieval mAP", "retrieval/mAP"),
        ),
    ),
    (
        "mnist_views",
        "mnist_views",
        (
            ("probe acc. (all views)", "downstream/label/accuracy"),
            ("retrieval R@1 (mean over views)", "retrieval/R@1"),
            ("retrieval mAP", "retrieval/mAP"),
            ("style R² (representation)", "downstream/nuisance/mean/r2"),
        ),
    ),
)


TRIFEATURE_METRICS = (
    ("shape (R), MLP", "downstream/shape/accuracy"),
    ("shape (R), linear", "downstream/linear/shape/accuracy"),
    ("texture_0 (U), MLP", "downstream/texture_0/accuracy"),
    ("texture_0 (U), linear", "downstream/linear/texture_0/accuracy"),
    ("own texture R² (U, per view)", "downstream/texture_onehot/mean/r2"),
    ("XOR colour bit (S), MLP", "downstream/synergy_label/accuracy"),
    ("XOR colour bit (S), linear", "downstream/linear/synergy_label/accuracy"),
    ("task label (task S), MLP", "downstream/task_label/accuracy"),
    ("task label (task S), linear", "downstream/linear/task_label/accuracy"),
    ("retrieval R@1 (shape relevance)", "retrieval/R@1"),
    ("retrieval mAP", "retrieval/mAP"),
    ("retrieval R@1 (shape + colour bit)", "eval:retrieval/R@1"),
    ("colour bit right given shape right (top 1)", "ratio:eval:retrieval/R@1|retrieval/R@1"),
)
TRIFEATURE_FEW = (
    ("shape, 10 labels/class", "downstream/linear_few10/shape/accuracy"),
    ("texture_0, 10 labels/class", "downstream/linear_few10/texture_0/accuracy"),
    ("XOR bit, 10 labels/class", "downstream/linear_few10/synergy_label/accuracy"),
    ("task label, 10 labels/class", "downstream/linear_few10/task_label/accuracy"),
)


SPAN_PRODUCT = "ova_ib span + product (w = 1)"
SPAN_PRODUCT_LEARNED = "ova_ib span + product, w learned in training (from 1)"
OVA_COMM = "ova_ib_comm: span + product (w = 1) + CoMM"
OVA_HEADS = "ova_ib_heads: span, product and CoMM heads"
OVA_HEADS_NO_COMM = "ova_ib_heads: span and product heads"
OVA_BRANCHES = "ova_ib_heads on separate encoders (one per head)"
OVA_HEADS_WIDE = "ova_ib_heads on one encoder as large (192-d representation)"
# The separate encoders' runs retrieved with the score weight chosen on training data
# (scripts/score_weight.py: only the retrieval columns differ from OVA_BRANCHES').
OVA_BRANCHES_SW = "ova_ib_heads on separate encoders, score weight chosen on train"
HELDOUT_FALL = "fifth:eval/heldout_loss/loss"  # relative; > 0: still falling


def trifeature_tables() -> tuple[list[Table], list[Comparison], list[AgainstBest]]:
    """Every objective on ovaib_trifeature M = 3 (issue 13 section 4), OVA-IB (beta = 0)
    against each, and the span + product score against the best of the others (section
    6)."""
    rows = {o: Row(o, "trifeature_m3", o) for o in ("ova_ib", "comm")}
    rows["symile"] = Row("symile", "trifeature_m3_symile", "symile")
    rows["confu"] = Row("confu", "trifeature_m3_confu", "confu")
    for o in ("gram", "triangle", "pairwise_clip", "anchor_clip"):
        rows[o] = Row(o, "trifeature_m3_baselines", o)
    rows[SPAN_PRODUCT] = Row(SPAN_PRODUCT, "trifeature_m3_span_product", "ova_ib")
    rows[SPAN_PRODUCT_LEARNED] = Row(
        SPAN_PRODUCT_LEARNED, "trifeature_m3_span_product_learned", "ova_ib"
    )
    rows[OVA_COMM] = Row(OVA_COMM, "trifeature_m3_ova_comm", "ova_ib_comm")
    rows[OVA_HEADS] = Row(OVA_HEADS, "trifeature_m3_heads", "ova_ib_heads")
    rows[OVA_HEADS_NO_COMM] = Row(OVA_HEADS_NO_COMM, "trifeature_m3_heads_no_comm", "ova_ib_heads")
    rows[OVA_BRANCHES] = Row(OVA_BRANCHES, "trifeature_m3_branches", "ova_ib_heads")
    rows[OVA_HEADS_WIDE] = Row(OVA_HEADS_WIDE, "trifeature_m3_heads_wide", "ova_ib_heads")
    rows[OVA_BRANCHES_SW] = Row(
        OVA_BRANCHES_SW, "trifeature_m3_branches_score_weight", "ova_ib_heads"
    )
    metrics = TRIFEATURE_METRICS + TRIFEATURE_FEW
    title = "ovaib_trifeature M = 3: every objective, 1500 steps"
    convergence = (("held-out loss, fall over the last fifth", HELDOUT_FALL),)
    candidates = (
        SPAN_PRODUCT, OVA_COMM, OVA_HEADS, OVA_HEADS_NO_COMM, OVA_BRANCHES, OVA_HEADS_WIDE,
        OVA_BRANCHES_SW, SPAN_PRODUCT_LEARNED,
    )  # fmt: skip
    others = tuple(r for k, r in rows.items() if k not in candidates)
    return (
        [
            Table(title, tuple(rows.values()), TRIFEATURE_METRICS + convergence),
            Table(
                f"{title}, linear probes on 10 labels per class",
                tuple(rows.values()),
                TRIFEATURE_FEW,
            ),
        ],
        [  # the candidates of section 6 are compared with the best baseline instead
            *(
                Comparison(f"{title}: ova_ib against {o}", rows["ova_ib"], rows[o], metrics)
                for o in rows
                if o != "ova_ib" and o not in candidates
            ),
            # does splitting the embedding into heads help? (the same terms on one embedding)
            *(
                Comparison(f"{title}: {a} against {b}", rows[a], rows[b], metrics)
                for a, b in (
                    (OVA_HEADS_NO_COMM, SPAN_PRODUCT),
                    (OVA_HEADS, OVA_COMM),
                    (OVA_BRANCHES, OVA_HEADS),  # separate encoders against one shared
                    (OVA_BRANCHES, OVA_HEADS_WIDE),  # ... against one as large
                    (OVA_BRANCHES_SW, OVA_BRANCHES),  # the chosen score weight against 1
                    (SPAN_PRODUCT_LEARNED, SPAN_PRODUCT),  # the learned weight against 1
                )
            ),
            # the control of the heads' span head (16 of 32 dimensions): OVA-IB at d = 16
            Comparison(
                f"{title}: ova_ib at d = 16 (the span head's width) against d = 32",
                Row("ova_ib, d = 16", "trifeature_m3_d16", "ova_ib"),
                rows["ova_ib"],
                metrics,
            ),
        ],
        [AgainstBest(f"{title}: {c} vs the best", rows[c], others, metrics) for c in candidates],
    )


def trifeature_many_tables(
    m: int,
) -> tuple[list[Table], list[Comparison], list[AgainstBest]]:
    """ovaib_trifeature at M = 4 or 5: one objective of each family of M = 3 (the
    projection score, Symile, CoMM), ConFu, and section 6's candidates (span + product,
    the separate heads, the heads on separate encoders, with the score weight of training
    and chosen on training data); OVA-IB against each baseline, and each candidate against
    the best of the four baselines run there (GRAM, TRIANGLE and the CLIPs were not)."""
    rows = {o: Row(o, f"trifeature_m{m}", o) for o in ("ova_ib", "symile", "comm")}
    rows["confu"] = Row("confu", f"trifeature_m{m}_confu", "confu")
    rows[SPAN_PRODUCT] = Row(SPAN_PRODUCT, f"trifeature_m{m}_span_product", "ova_ib")
    rows[OVA_HEADS] = Row(OVA_HEADS, f"trifeature_m{m}_heads", "ova_ib_heads")
    rows[OVA_BRANCHES] = Row(OVA_BRANCHES, f"trifeature_m{m}_branches", "ova_ib_heads")
    rows[OVA_BRANCHES_SW] = Row(
        OVA_BRANCHES_SW, f"trifeature_m{m}_branches_score_weight", "ova_ib_heads"
    )
    title = f"ovaib_trifeature M = {m}, 1500 steps"
    convergence = (("held-out loss, fall over the last fifth", HELDOUT_FALL),)
    metrics = TRIFEATURE_METRICS + TRIFEATURE_FEW
    candidates = (SPAN_PRODUCT, OVA_HEADS, OVA_BRANCHES, OVA_BRANCHES_SW)
    others = tuple(r for k, r in rows.items() if k not in candidates)
    return (
        [Table(title, tuple(rows.values()), metrics + convergence)],
        [
            Comparison(f"{title}: ova_ib against {o}", rows["ova_ib"], rows[o], metrics)
            for o in ("symile", "comm", "confu")
        ],
        [
            AgainstBest(f"{title}: {c} vs the best of four", rows[c], others, metrics)
            for c in candidates
        ],
    )


def tau_tables() -> tuple[list[Table], list[Comparison]]:
    tables, comparisons = [], []
    for title, prefix, metrics in TAU_SETTINGS:
        new = {b: Row(f"ova_ib beta = {b}, tau = 0.01 (beta x tau = {0.01 * float(b):g})",
                      f"{prefix}_tau0.01_beta{b}", "ova_ib") for b in TAU_BETAS}  # fmt: skip
        rows = tuple(new.values())
        tables.append(Table(f"{title}: beta at the paper's tau = 0.01", rows, metrics))
        comparisons += [
            Comparison(
                f"{title}, tau = 0.01: beta = {b} against beta = 0", new[b], new["0"], metrics
            )
            for b in ("1", "0.1", "0.5")
        ]
    return tables, comparisons


def latent_tables() -> list[Table]:
    beta_rows = tuple(Row(f"ova_ib beta = {b}", f"latent_beta{b}", "ova_ib") for b in LATENT_BETAS)
    others = tuple(Row(o, "latent_others", o) for o in OBJECTIVES[1:])
    mlp = (
        Row("ova_ib beta = 1 + MLP projector", "latent_mlp", "ova_ib"),
        Row("ova_ib beta = 1 + product projector", "latent_product", "ova_ib"),
        Row("ova_ib beta = 1, span + product score", "latent_span_product", "ova_ib"),
        Row("ova_ib beta = 1, span + 0.3 x product score", "latent_span_product_w0.3", "ova_ib"),
    )
    m5 = (
        *(Row(f"ova_ib beta = {b}", f"latent_m5_beta{b}", "ova_ib") for b in LATENT_BETAS),
        Row("ova_ib beta = 1 + product projector", "latent_m5_product", "ova_ib"),
        Row("ova_ib beta = 1, span + product score", "latent_m5_span_product", "ova_ib"),
        *(Row(o, "latent_m5_others", o) for o in ("symile", "pairwise_clip")),
    )
    return [
        Table("ovaib_latent M = 3: OVA-IB's beta sweep", beta_rows, LATENT_METRICS),
        Table(
            "ovaib_latent M = 3: the other objectives and the MLP projector",
            mlp + others,
            LATENT_METRICS,
        ),
        Table("ovaib_latent M = 5: OVA-IB's beta sweep, Symile, pairwise CLIP", m5, LATENT_METRICS),
    ]


def mfeat_tables(
    dataset: str = "mfeat", m: int = 6, nuisance: bool = False, extensions: bool = False
) -> list[Table]:
    variants = [
        ("ova_ib beta = 1 (ablation)", f"{dataset}_beta1"),
        ("ova_ib + MLP projector (ablation)", f"{dataset}_mlp"),
    ]
    if extensions:
        variants.append(("ova_ib + product projector (extension)", f"{dataset}_product"))
    variants.append(("ova_ib span + product score (extension)", f"{dataset}_span_product"))
    rows = _objective_rows(dataset, variants, m)
    sizes = tuple((f"subsets of {k}", f"subset_size:{k}") for k in range(1, m + 1))
    return [
        Table(
            f"{dataset}: downstream accuracy and retrieval",
            rows,
            (
                ("probe acc. (all views)", "downstream/label/accuracy"),
                ("retrieval R@1 (mean over views)", "retrieval/R@1"),
                ("retrieval mAP", "retrieval/mAP"),
            )
            + ((("style R² (representation)", "downstream/nuisance/mean/r2"),) if nuisance else ()),
        ),
        Table(
            f"{dataset}: probe accuracy by number of views (mean over the subsets of that size)",
            rows,
            sizes,
        ),
    ]


def symile_stable_tables() -> list[Table]:
    """Symile's rows of sections 3 and 4 again at its stable default (normalised
    embeddings, learnable logit scale; the old rows used unnormalised ones at scale 1)."""
    label = "symile (stable default)"
    mfeat_metrics = (
        ("probe acc. (all views)", "downstream/label/accuracy"),
        ("retrieval R@1 (mean over views)", "retrieval/R@1"),
        ("retrieval mAP", "retrieval/mAP"),
    )
    parity = []
    for m in (3, 4, 5):
        pair = "+".join(f"x{i}" for i in range(m - 1)) + f"->x{m - 1}"
        parity.append(
            (
                f"parity M = {m}, p = 1 (chance R@1 = 0.25)",
                f"parity_m{m}_symile_stable",
                (
                    (f"R@1 {pair}", f"retrieval/{pair}/R@1"),
                    ("mAP", f"retrieval/{pair}/mAP"),
                    ("probe acc. (all modalities)", "downstream/label/accuracy"),
                ),
            )
        )
    mnist_metrics = (*mfeat_metrics, ("style R² (representation)", "downstream/nuisance/mean/r2"))
    return [
        Table(f"{title}: Symile at its stable default", (Row(label, sweep, "symile"),), metrics)
        for title, sweep, metrics in (
            ("ovaib_latent M = 3", "latent_symile_stable", LATENT_METRICS),
            ("ovaib_latent M = 5", "latent_m5_symile_stable", LATENT_METRICS),
            ("mfeat", "mfeat_symile_stable", mfeat_metrics),
            *parity,
            ("mnist_views", "mnist_views_symile_stable", mnist_metrics),
        )
    ]


TABLES: list[Table] = [
    parity_table(3),
    parity_table(4),
    parity_table(5),
    p_sweep_table(),
    *latent_tables(),
    *mfeat_tables("mfeat", 6, extensions=True),
    *mfeat_tables("mnist_views", 3, nuisance=True),
    *tau_tables()[0],
    *trifeature_tables()[0],
    *trifeature_many_tables(4)[0],
    *trifeature_many_tables(5)[0],
    *symile_stable_tables(),
]


def retention_tables() -> list[Retention]:
    """The moonshot candidates' retrieval on ovaib_latent M = 3 and uci_mfeat against the
    projection score's (tau = 0.01, beta = 0, 5 seeds; issue 13 section 6)."""
    metrics = (("retrieval R@1", "retrieval/R@1"), ("retrieval mAP", "retrieval/mAP"))
    out = []
    for title, prefix in (("ovaib_latent M = 3", "latent"), ("mfeat", "mfeat")):
        reference = Row("ova_ib (projection)", f"{prefix}_tau0.01_beta0", "ova_ib")
        for label, sweep, objective in (
            (SPAN_PRODUCT, "span_product", "ova_ib"),
            (SPAN_PRODUCT_LEARNED, "span_product_learned", "ova_ib"),
            (OVA_COMM, "ova_comm", "ova_ib_comm"),
            (OVA_HEADS, "heads", "ova_ib_heads"),
            (OVA_BRANCHES, "branches", "ova_ib_heads"),
        ):
            candidate = Row(label, f"{prefix}_tau0.01_{sweep}", objective)
            out.append(
                Retention(
                    f"{title}, tau = 0.01: {label} keeps 95 % of the projection's retrieval?",
                    candidate,
                    reference,
                    metrics,
                )
            )
    return out


COMPARISONS: list[Comparison] = (
    tau_tables()[1]
    + trifeature_tables()[1]
    + trifeature_many_tables(4)[1]
    + trifeature_many_tables(5)[1]
)
RETENTION: list[Retention] = retention_tables()
AGAINST_BEST: list[AgainstBest] = (
    trifeature_tables()[2] + trifeature_many_tables(4)[2] + trifeature_many_tables(5)[2]
)


@dataclass(frozen=True)
class ArchivedRun:
    """One seed of a published row, read back from a ``--json`` file (``--archive``):
    its value of each metric key the tables read, and its wall time."""

    values: dict[str, float]
    wall: float | None


Run = str | ArchivedRun  # a run directory, or an archived one


@dataclass(frozen=True)
class Source:
    """Where rows' runs are found: run directories under ``root``; seeds of a row that
    has none there from ``archive`` ((sweep, objective) -> seed directory name -> run)."""

    root: str
    archive: dict[tuple[str, str], dict[str, ArchivedRun]]


def load_archive(paths: Sequence[str]) -> dict[tuple[str, str], dict[str, ArchivedRun]]:
    """The per-seed values of ``--json`` files, keyed by (sweep, objective) of the row
    that wrote them (found through :data:`TABLES`: a table's title and a row's label name
    an entry; the table's columns give each value's metric key). A row in several tables
    gathers every metric of all of them; a row published only in a comparison or a
    retention test is read from its per-metric paired values. A table entry without
    ``seeds`` (written before the format had them) cannot be paired by seed: a clear
    error (a comparison entry without them is skipped)."""
    archive: dict[tuple[str, str], dict[str, dict]] = {}
    walls: dict[tuple[str, str], dict[str, float | None]] = {}
    for path in paths:
        published = _load(path)
        for table in TABLES:
            for row in table.rows:
                entry = published.get(table.title, {}).get(row.label)
                if entry is None:
                    continue
                if "seeds" not in entry:
                    raise ValueError(
                        f"{path}: {table.title!r} / {row.label!r} has no 'seeds' (written "
                        "by an older results_tables.py): regenerate it with --json, or add "
                        "the seeds of its table in docs/RESULTS.md to it"
                    )
                seeds = [f"seed_{s}" for s in entry["seeds"]]
                runs = archive.setdefault((row.sweep, row.objective), {})
                wall = walls.setdefault((row.sweep, row.objective), {})
                for col, key in table.metrics:
                    vals = entry.get(col)
                    if vals is None:
                        continue
                    if len(vals) != len(seeds):
                        raise ValueError(
                            f"{path}: {table.title!r} / {row.label!r} / {col!r} has "
                            f"{len(vals)} values for {len(seeds)} seeds"
                        )
                    for seed, v in zip(seeds, vals):
                        if v is not None:
                            runs.setdefault(seed, {})[key] = float(v)
                for seed, w in zip(seeds, entry.get("wall s/run", [None] * len(seeds))):
                    wall[seed] = w
                    runs.setdefault(seed, {})
        # rows published in a comparison or a retention test only (e.g. a control)
        paired = [(c, (("a", c.a), ("b", c.b))) for c in COMPARISONS]
        paired += [(r, (("candidate", r.candidate), ("reference", r.reference))) for r in RETENTION]
        for item, sides in paired:
            for col, key in item.metrics:
                entry = published.get(item.title, {}).get(col)
                if entry is None or "seeds" not in entry:
                    continue
                for side, row in sides:
                    runs = archive.setdefault((row.sweep, row.objective), {})
                    walls.setdefault((row.sweep, row.objective), {})
                    for seed, v in zip(entry["seeds"], entry[side]):
                        runs.setdefault(f"seed_{seed}", {}).setdefault(key, float(v))
    return {
        k: {s: ArchivedRun(v, walls[k].get(s)) for s, v in runs.items()}
        for k, runs in archive.items()
    }


def _source(root: str | Source) -> Source:
    return root if isinstance(root, Source) else Source(root, {})


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _lookup(run_dir: Run, key: str) -> float | None:
    """A metric of one run: ``evaluator/metric`` from results.json, ``eval:...`` from
    eval/results.json, ``subset_size:k`` the mean label accuracy of the size-k subsets,
    ``ratio:KEY_A|KEY_B`` the quotient of two such metrics, ``fifth:METRIC`` the relative
    fall of a logged metric over the last fifth of training (:func:`_last_fifth_fall`).
    An archived run has the values of its published columns, whatever their kind."""
    if isinstance(run_dir, ArchivedRun):
        return run_dir.values.get(key)
    if key.startswith("fifth:"):
        return _last_fifth_fall(run_dir, key[len("fifth:") :])
    if key.startswith("ratio:"):
        num, den = (_lookup(run_dir, k) for k in key[len("ratio:") :].split("|"))
        return None if num is None or not den else num / den
    source = "results.json"
    if key.startswith("eval:"):
        source, key = os.path.join("eval", "results.json"), key[len("eval:") :]
    path = os.path.join(run_dir, source)
    if not os.path.exists(path):
        return None
    results = _load(path)
    if key.startswith("subset_size:"):
        k = int(key.split(":")[1])
        table = results.get("modality_subsets", {})
        vals = [
            v
            for name, v in table.items()
            if name.endswith("/label/accuracy") and name.split("/")[0].count("+") == k - 1
        ]
        return float(np.mean(vals)) if vals else None
    evaluator, _, metric = key.partition("/")
    value = results.get(evaluator, {}).get(metric)
    return None if value is None else float(value)


def _last_fifth_fall(run_dir: str, metric: str) -> float | None:
    """``(v(s0) - v(S)) / |v(s0)|`` of ``metric`` in the run's metrics.jsonl: S its last
    logged step, s0 the last step it was logged at or before 0.8 S (positive: still
    falling). The window is the last fifth when the metric is logged at 0.8 S (the
    trifeature sweeps log the held-out loss every 300 of 1500 steps), longer otherwise.
    A step logged twice (a resumed run) counts its last value; a torn last line is
    skipped (``records.read_metrics``). None when the metric was logged at fewer than
    two such steps."""
    from ovaib_jax import records

    values: dict[int, float] = {}
    for record in records.read_metrics(run_dir):
        if metric in record:  # a non-finite value is written as null
            v = record[metric]
            values[int(record["step"])] = float("nan") if v is None else float(v)
    if not values:
        return None
    last = max(values)
    before = [s for s in values if 5 * s <= 4 * last]
    if not before:
        return None
    v0 = values[max(before)]
    return (v0 - values[last]) / abs(v0) if v0 else None


def _runs(root: str | Source, row: Row) -> dict[str, Run]:
    """The row's runs by seed directory name (``seed_<seed>``, sorted): the finished run
    directories under the source's root, then the archived seeds it lacks."""
    src = _source(root)
    pattern = os.path.join(src.root, row.sweep, row.objective, "seed_*")
    dirs = (d for d in glob.glob(pattern) if os.path.exists(os.path.join(d, "results.json")))
    runs: dict[str, Run] = {os.path.basename(d): d for d in dirs}
    for seed, run in src.archive.get((row.sweep, row.objective), {}).items():
        runs.setdefault(seed, run)
    return dict(sorted(runs.items()))


def _wall(run: Run) -> float | None:
    if isinstance(run, ArchivedRun):
        return run.wall
    path = os.path.join(run, "sweep_run.json")
    return _load(path).get("wall_time_s") if os.path.exists(path) else None


def _fmt(vals: list[float], digits: int) -> str:
    if not vals:
        return "-"
    x = np.asarray(vals)
    std = x.std(ddof=1) if len(x) > 1 else 0.0
    return f"{x.mean():.{digits}f} ± {std:.{digits}f}"


def render(table: Table, root: str | Source) -> tuple[str, dict]:
    head = ["objective", *(c for c, _ in table.metrics), "seeds", "wall s/run"]
    lines = [f"#### {table.title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|")
    raw: dict = {}
    for row in table.rows:
        runs = _runs(root, row)
        if not runs:
            lines.append(f"| {row.label} | " + " | ".join(["not run"] * (len(head) - 1)) + " |")
            continue
        seeds = [s.removeprefix("seed_") for s in runs]
        walls = [_wall(r) for r in runs.values()]
        cells, raw[row.label] = [], {"seeds": seeds, "wall s/run": walls}
        for col, key in table.metrics:
            per_seed = [_lookup(r, key) for r in runs.values()]
            raw[row.label][col] = per_seed
            vals = [v for v in per_seed if v is not None]
            cell = _fmt(vals, table.digits)
            if vals and len(vals) < len(runs):  # e.g. a later evaluation not run on every seed
                cell += f" ({len(vals)} seeds)"
            cells.append(cell)
        known = [w for w in walls if w is not None]
        wall = f"{np.nanmean(known):.0f}" if known else "-"
        lines.append(f"| {row.label} | " + " | ".join([*cells, ",".join(seeds), wall]) + " |")
    return "\n".join(lines), raw


def render_comparison(comp: Comparison, root: str | Source) -> tuple[str, dict]:
    """Per metric: A and B (mean ± std over the seeds both ran), A - B with its paired
    t 95 % interval, and the verdict."""
    head = ["metric", comp.a.label, comp.b.label, "A - B [95 % interval]", "verdict", "seeds"]
    lines = [f"#### {comp.title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * 3 + [":---", "---:"]) + "|")
    runs_a, runs_b = _runs(root, comp.a), _runs(root, comp.b)
    seeds = sorted(set(runs_a) & set(runs_b))
    raw: dict = {}
    for col, key in comp.metrics:
        pairs = [(s, _lookup(runs_a[s], key), _lookup(runs_b[s], key)) for s in seeds]
        pairs = [(s, x, y) for s, x, y in pairs if x is not None and y is not None]
        if len(pairs) < 2:
            cells = ["not run"] * 4 if not pairs else ["-", "-", "-", "needs 2+ paired seeds"]
            lines.append(f"| {col} | " + " | ".join(cells) + f" | {len(pairs)} |")
            continue
        paired, a, b = (list(v) for v in zip(*pairs))
        diff = PAIRED(a, b)
        paired = [s.removeprefix("seed_") for s in paired]
        raw[col] = {"a": a, "b": b, "diff": diff._asdict(), "seeds": paired}
        d = comp.digits
        interval = f"{diff.mean:+.{d}f} [{diff.lo:+.{d}f}, {diff.hi:+.{d}f}]"
        verdict = stats.verdict(diff, "A", "B", higher_is_better=not lower_is_better(key))
        cells = [_fmt(a, d), _fmt(b, d), interval, verdict, str(diff.n)]
        lines.append(f"| {col} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"A = {comp.a.label}; B = {comp.b.label}; paired by seed "
                 f"({', '.join(s.removeprefix('seed_') for s in seeds) or 'none'}).")  # fmt: skip
    return "\n".join(lines), raw


def render_against_best(item: AgainstBest, root: str | Source) -> tuple[str, dict]:
    """Per metric: the best of the others (highest mean over the seeds it shares with the
    candidate; lowest for a :func:`lower_is_better` metric), candidate - best with its
    paired t 95 % interval (:data:`PAIRED`), and the
    verdict: "best" (candidate above, interval above 0), "tie with the best" or "below
    the best"."""
    head = ["metric", "best other", "best", item.candidate.label, "cand. - best [95 %]",
            "verdict", "seeds"]  # fmt: skip
    lines = [f"#### {item.title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join([":---", ":---"] + ["---:"] * 3 + [":---", "---:"]) + "|")
    cand = _runs(root, item.candidate)
    others = [(row, _runs(root, row)) for row in item.others]
    raw: dict = {}
    d = item.digits
    for col, key in item.metrics:
        sign = -1.0 if lower_is_better(key) else 1.0  # the best other: highest sign * mean
        best = None  # (sign * mean of the other, row, candidate values, other values)
        for row, runs in others:
            pairs = [(_lookup(cand[s], key), _lookup(runs[s], key)) for s in cand if s in runs]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            score = sign * np.mean([y for _, y in pairs]) if pairs else None
            if len(pairs) >= 2 and (best is None or score > best[0]):
                a, b = (list(v) for v in zip(*pairs))
                best = (float(score), row, a, b)
        if best is None:  # nothing to compare: no values, or under 2 paired seeds
            has = any(_lookup(d, key) is not None for d in cand.values())
            cells = ["-"] * 4 + ["needs 2+ paired seeds"] if has else ["not run"] * 5
            lines.append(f"| {col} | " + " | ".join(cells) + " | - |")
            continue
        _, row, a, b = best
        diff = PAIRED(a, b)
        verdict = {"A better": "best", "B better": "below the best"}.get(
            stats.verdict(diff, "A", "B", higher_is_better=sign > 0), "tie with the best"
        )
        raw[col] = {"best": row.label, "candidate": a, "other": b, "diff": diff._asdict()}
        interval = f"{diff.mean:+.{d}f} [{diff.lo:+.{d}f}, {diff.hi:+.{d}f}]"
        cells = [row.label, _fmt(b, d), _fmt(a, d), interval, verdict, str(diff.n)]
        lines.append(f"| {col} | " + " | ".join(cells) + " |")
    return "\n".join(lines), raw


def render_retention(item: Retention, root: str | Source) -> tuple[str, dict]:
    """Per metric: reference and candidate (mean ± std over the seeds both ran), their
    ratio of means, candidate - fraction x reference with its paired t 95 %
    interval, and the verdict: "keeps" (interval above 0), "fails" (below) or "cannot
    tell" (it covers 0)."""
    f = item.fraction
    head = ["metric", item.reference.label, item.candidate.label, "ratio of means",
            f"cand. - {f:g} x ref. [95 %]", "verdict", "seeds"]  # fmt: skip
    lines = [f"#### {item.title}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * 4 + [":---", "---:"]) + "|")
    runs_c, runs_r = _runs(root, item.candidate), _runs(root, item.reference)
    raw: dict = {}
    d = item.digits
    for col, key in item.metrics:
        seeds = [s for s in runs_c if s in runs_r]
        pairs = [(s, _lookup(runs_c[s], key), _lookup(runs_r[s], key)) for s in seeds]
        pairs = [(s, x, y) for s, x, y in pairs if x is not None and y is not None]
        if len(pairs) < 2:
            lines.append(f"| {col} | " + " | ".join(["not run"] * 5) + f" | {len(pairs)} |")
            continue
        paired, c, r = (list(v) for v in zip(*pairs))
        diff = PAIRED(c, [f * v for v in r])
        verdict = {"A better": "keeps", "B better": "fails"}.get(
            stats.verdict(diff, "A", "B"), "cannot tell"
        )
        ratio = float(np.mean(c) / np.mean(r)) if np.mean(r) else float("nan")
        raw[col] = {"candidate": c, "reference": r, "ratio": ratio, "diff": diff._asdict()}
        raw[col]["seeds"] = [s.removeprefix("seed_") for s in paired]
        interval = f"{diff.mean:+.{d}f} [{diff.lo:+.{d}f}, {diff.hi:+.{d}f}]"
        cells = [_fmt(r, d), _fmt(c, d), f"{ratio:.2f}", interval, verdict, str(diff.n)]
        lines.append(f"| {col} | " + " | ".join(cells) + " |")
    return "\n".join(lines), raw


def rows_of(item: Table | Comparison | AgainstBest | Retention) -> tuple[Row, ...]:
    """Every row a table or comparison reads."""
    if isinstance(item, Table):
        return item.rows
    if isinstance(item, Comparison):
        return (item.a, item.b)
    if isinstance(item, AgainstBest):
        return (item.candidate, *item.others)
    return (item.candidate, item.reference)


def has_runs(item: Table | Comparison | AgainstBest | Retention, root: str | Source) -> bool:
    """Whether any row of ``item`` has a run directory under the root (``--update``
    rewrites only those: a table whose sweeps are elsewhere, or only archived, keeps its
    published text)."""
    root = _source(root).root
    return any(isinstance(r, str) for row in rows_of(item) for r in _runs(root, row).values())


def update_markdown(path: str, texts: dict[str, str]) -> None:
    """Replaces each marked block of ``path`` whose title is in ``texts``."""
    with open(path) as f:
        doc = f.read()

    def block(match: re.Match) -> str:
        title = match.group(1)
        if title not in texts:
            return match.group(0)
        return f"<!-- table: {title} -->\n{texts[title]}\n<!-- end table -->"

    doc = re.sub(r"<!-- table: (.+?) -->\n.*?<!-- end table -->", block, doc, flags=re.S)
    with open(path, "w") as f:
        f.write(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="directory holding the sweep workdirs")
    parser.add_argument("--json", default="", help="write every per-seed value here")
    parser.add_argument("--only", default="", help="print tables whose title contains this")
    parser.add_argument("--update", default="", help="markdown file whose marked tables to rewrite")
    parser.add_argument(
        "--archive",
        action="append",
        default=[],
        help="a --json file of published values: seeds without a run under --root (repeatable)",
    )
    parser.add_argument(
        "--interval", choices=sorted(INTERVALS), default="t",
        help="paired interval of the comparisons (bootstrap: the percentile bootstrap)",
    )  # fmt: skip
    args = parser.parse_args()
    global PAIRED
    PAIRED = INTERVALS[args.interval]
    source = Source(args.root, load_archive(args.archive))
    everything, texts = {}, {}
    items = [(t, render) for t in TABLES] + [(c, render_comparison) for c in COMPARISONS]
    items += [(c, render_against_best) for c in AGAINST_BEST]
    items += [(c, render_retention) for c in RETENTION]
    for item, render_item in items:
        if args.only and args.only not in item.title:
            continue
        text, raw = render_item(item, source)
        everything[item.title] = raw
        if has_runs(item, source):
            texts[item.title] = text
        print(text, end="\n\n")
    if args.update:
        update_markdown(args.update, texts)
    if args.json:
        from ovaib_jax import records

        with open(args.json, "w") as f:
            f.write(records.dumps(everything, indent=1, sort_keys=True))  # NaN as null


if __name__ == "__main__":
    main()
