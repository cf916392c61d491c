"""Zero-shot cross-modal retrieval over a whole split, scored with each objective's own
similarity (SPEC section 4), chunked over queries.

A *query* is a set Q of modalities of test sample i, a *candidate* is modality c of test
sample j; every test sample is both a query and a candidate (Nq = Nc = N). Scores come
from ``ovaib_jax.losses.get_scorer(objective)``. The score matrix is computed
``chunk_size`` queries at a time ((chunk_size, N) scores in memory, never (N, N)); the
last chunk is padded to the same size so one compiled function serves every chunk.

Relevance:

* ``"index"`` (default): the only relevant candidate of query i is candidate i (its own
  sample). The rank r_i of that candidate gives R@k = mean(r_i <= k), median rank
  = median(r_i), and mAP: with a single relevant item the average precision is 1 / r_i,
  so **mAP = mean reciprocal rank** (MRR).
* ``"label"``: every candidate whose class label (``label_target``, default the first
  classification target) equals the query's is relevant (the query's own sample
  included). R@k = fraction of queries with at least one relevant candidate in the top
  k (hit rate), median rank = median rank of the first relevant candidate, and mAP the
  mean over queries of the average precision ``(1/R) sum_{relevant j} precision@rank(j)``.
  ``candidate_targets`` adds per-modality targets ((N, M) arrays) to the label: for the
  pair ``Q -> c`` a candidate must also match the query's sample in column c, e.g. on
  ``ovaib_trifeature`` ``label_target="shape", candidate_targets=("color_bits",)``: the
  same shape *and* the colour bit the query's views imply for view c (their XOR), a
  test of the higher-order dependence that shape-only relevance cannot see.

Ties (equal scores; rank counts from 1):

* ``"pessimistic"`` (default): a relevant candidate ranks below every candidate with an
  equal score, i.e. ``rank = 1 + #{j != i : s_j >= s_i}``. Collapsed embeddings (all
  scores equal) get the worst ranks, never a perfect score.
* ``"optimistic"``: ranks above them, ``rank = 1 + #{j : s_j > s_i}``.
* ``"random"``: uniformly random tie-breaking. For ``"index"`` the metrics are its exact
  expectations (R@k = E[1{r <= k}], mAP = E[1/r], the median of E[r]); for ``"label"`` a
  single seeded draw (a hash of query, candidate and seed: independent of chunking).

Identical query and candidate embeddings, for a scorer that gives the true pair the
strictly highest score, give R@1 = mAP = 1 under every convention.

A NaN score (a NaN embedding) ranks below every number; with index relevance a NaN
true score ranks last under every convention, also in a row of NaN scores (a NaN
query), so it is a hit only for k >= N, where every candidate is one
(:func:`nan_scores_last`, which in-batch retrieval shares).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ovaib_jax.evaluators._base import Embedded, Evaluator, RunInfo, objective_of
from ovaib_jax.reporting import report

RELEVANCE = ("index", "label")
TIES = ("pessimistic", "optimistic", "random")

Pair = tuple[tuple[int, ...], int]


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """``retrieval`` config.

    Attributes:
      pairs: (queries, candidate) pairs: each ``(("resp", "ecg"), "bvp")`` (names or
        indices) or a string ``"resp+ecg->bvp"``. None: for each modality c, all the
        others -> c.
      ks: the k of the R@k.
      chunk_size: queries scored per chunk (None: all at once).
      relevance: ``"index"`` or ``"label"`` (see the module docstring).
      label_target: the class-label target for ``relevance="label"`` (None: the first
        (N,) classification target).
      candidate_targets: per-modality targets ((N, M) integer arrays, e.g.
        ``"color_bits"``) whose column of the candidate modality joins the label of
        ``relevance="label"`` (see the module docstring); default none.
      ties: ``"pessimistic"``, ``"optimistic"`` or ``"random"``.
      scorer_kwargs: extra keyword arguments of the scorer (e.g. ``{"lam": 1e-8}``).
      table_digits: decimals in the markdown table.
    """

    pairs: tuple[Any, ...] | None = None
    ks: tuple[int, ...] = (1, 5, 10)
    chunk_size: int | None = 1024
    relevance: str = "index"
    label_target: str | None = None
    candidate_targets: tuple[str, ...] = ()
    ties: str = "pessimistic"
    scorer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    table_digits: int = 4

    def __post_init__(self):
        if self.relevance not in RELEVANCE:
            raise ValueError(f"relevance must be one of {RELEVANCE}, got {self.relevance!r}.")
        if self.ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {self.ties!r}.")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {self.chunk_size}.")
        object.__setattr__(self, "ks", tuple(int(k) for k in self.ks))
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"ks must be positive ints, got {self.ks}.")
        object.__setattr__(self, "scorer_kwargs", dict(self.scorer_kwargs or {}))
        cand = self.candidate_targets
        cand = (cand,) if isinstance(cand, str) else tuple(cand or ())
        object.__setattr__(self, "candidate_targets", cand)
        if cand and self.relevance != "label":
            raise ValueError(
                f"candidate_targets {cand} join the label of relevance='label'; set "
                f"relevance='label' (got {self.relevance!r})."
            )


def parse_pair(pair: Any, emb: Embedded) -> Pair:
    """``"a+b->c"`` or ``((a, b), c)`` (names or indices) -> ((ia, ib), ic)."""
    if isinstance(pair, str):
        if "->" not in pair:
            raise ValueError(f"Retrieval pair {pair!r}: expected 'q1+q2->c'.")
        q, c = pair.split("->")
        queries: Sequence[Any] = [s.strip() for s in q.split("+")]
        cand: Any = c.strip()
    else:
        try:
            queries, cand = pair
        except (TypeError, ValueError):
            raise ValueError(f"Retrieval pair {pair!r}: expected (queries, candidate).") from None
        if isinstance(queries, (str, int, np.integer)):
            queries = [queries]
    qi = tuple(emb.modality_index(q) for q in queries)
    ci = emb.modality_index(cand)
    if not qi or len(set(qi)) != len(qi) or ci in qi:
        raise ValueError(
            f"Retrieval pair {pair!r}: queries must be distinct modalities not containing "
            "the candidate."
        )
    return qi, ci


def default_pairs(m: int) -> list[Pair]:
    """For each modality c, all the others -> c."""
    return [(tuple(i for i in range(m) if i != c), c) for c in range(m)]


def pair_name(pair: Pair, names: Sequence[str]) -> str:
    """``((0, 1), 2) -> "resp+ecg->bvp"``."""
    return "+".join(names[i] for i in pair[0]) + "->" + names[pair[1]]


def _hash_uniform(rows: jax.Array, n: int, seed: jax.Array) -> jax.Array:
    """(C, n) pseudo-random tie-break keys, a function of (query row, candidate, seed):
    the murmur3 finaliser of a mix of the three (no PRNG state, cheap to compile, and the
    same key for a (query, candidate) pair whatever the chunking)."""
    cols = jnp.arange(n, dtype=jnp.uint32)[None, :]
    x = rows.astype(jnp.uint32)[:, None] * jnp.uint32(0x9E3779B1)
    x = x ^ (cols * jnp.uint32(0x85EBCA77)) ^ (seed.astype(jnp.uint32) * jnp.uint32(0xC2B2AE3D))
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def nan_scores_last(s: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The NaN rule of split and in-batch retrieval: scores ``s`` (C, N) with every NaN
    set to -inf (below every number, never first), and whether each row's true score,
    column ``rows`` (C,), was NaN (C,). Such a true candidate ranks last, N (1-based),
    whatever the tie convention, also in a row of NaN scores (a NaN query, where every
    -inf ties): a hit only for k >= N, where every candidate is one."""
    true_nan = jnp.isnan(jnp.take_along_axis(s, rows[:, None], axis=1))[:, 0]
    return jnp.where(jnp.isnan(s), -jnp.inf, s), true_nan


@functools.lru_cache(maxsize=32)
def _chunk_fn(scorer: Callable, kw: tuple, relevance: str, ties: str, ks: tuple[int, ...]):
    """Jitted per-chunk statistics: ``(queries (Q, C, d), cands (N, d), rows (C,),
    labels_q (C,), labels_c (N,), seed) -> (hits (C, K), reciprocal/AP (C,), rank (C,))``."""
    kwargs = dict(kw)
    ks_arr = jnp.asarray(ks, jnp.float32)

    def index_stats(s, rows, true_nan):
        true = jnp.take_along_axis(s, rows[:, None], axis=1)  # (C, 1)
        higher = jnp.sum(s > true, axis=1).astype(jnp.float32)
        ties_ = jnp.sum(s == true, axis=1).astype(jnp.float32) - 1.0  # minus the true one
        # A NaN true score ranks last (nan_scores_last).
        higher = jnp.where(true_nan, s.shape[1] - 1.0, higher)
        ties_ = jnp.where(true_nan, 0.0, ties_)
        if ties == "pessimistic":
            rank = higher + ties_ + 1.0
        elif ties == "optimistic":
            rank = higher + 1.0
        else:  # exact expectations under a uniformly random order of the tied block
            lo, t1 = higher, ties_ + 1.0  # rank uniform on {lo + 1, ..., lo + t1}
            hits = jnp.clip((ks_arr[None, :] - lo[:, None]) / t1[:, None], 0.0, 1.0)
            n = s.shape[1]
            harmonic = jnp.concatenate(
                [jnp.zeros((1,)), jnp.cumsum(1.0 / jnp.arange(1, n + 1, dtype=jnp.float32))]
            )
            recip = (harmonic[(lo + t1).astype(jnp.int32)] - harmonic[lo.astype(jnp.int32)]) / t1
            return hits, recip, lo + (t1 + 1.0) / 2.0
        hits = (rank[:, None] <= ks_arr[None, :]).astype(jnp.float32)
        return hits, 1.0 / rank, rank

    def label_stats(s, rows, labels_q, labels_c, seed):
        rel = (labels_q[:, None] == labels_c[None, :]).astype(jnp.float32)  # (C, N)
        if ties == "pessimistic":
            tie_key = rel
        elif ties == "optimistic":
            tie_key = -rel
        else:
            tie_key = _hash_uniform(rows, s.shape[1], seed)
        _, _, rel_sorted = jax.lax.sort((-s, tie_key, rel), dimension=1, num_keys=2)
        pos = jnp.arange(1, s.shape[1] + 1, dtype=jnp.float32)
        cum = jnp.cumsum(rel_sorted, axis=1)
        n_rel = jnp.maximum(cum[:, -1], 1.0)
        ap = jnp.sum(rel_sorted * cum / pos, axis=1) / n_rel
        first = jnp.argmax(rel_sorted, axis=1).astype(jnp.float32) + 1.0
        hits = (first[:, None] <= ks_arr[None, :]).astype(jnp.float32)
        return hits, ap, first

    def fn(queries, cands, rows, labels_q, labels_c, seed):
        s = scorer(queries, cands, **kwargs).astype(jnp.float32)  # (C, N)
        s, true_nan = nan_scores_last(s, rows)
        if relevance == "index":
            return index_stats(s, rows, true_nan)
        return label_stats(s, rows, labels_q, labels_c, seed)

    return jax.jit(fn)


def joint_labels(*columns: np.ndarray) -> np.ndarray:
    """(N,) int ids of the distinct rows of the stacked (N,) label columns: two samples
    share an id iff they agree in every column."""
    rows = np.stack([np.asarray(c).reshape(-1) for c in columns], 1)  # (N, columns)
    _, ids = np.unique(rows, axis=0, return_inverse=True)
    return ids.reshape(-1)


def chance_recall(n: int, k: int, labels: np.ndarray | None = None) -> float:
    """R@k of a uniformly random ranking of the n candidates (the chance level).

    Index relevance (``labels`` None): one relevant candidate, ``min(k / n, 1)``. Label
    relevance: query i has ``R_i`` relevant candidates (those of its class, itself
    included), and misses the top k with probability ``prod_{j<k} (n - R_i - j) / (n -
    j)``; the chance level is the mean over queries of one minus that.
    """
    if labels is None:
        return min(k / n, 1.0)
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    rel = counts[inverse.reshape(-1)].astype(np.float64)  # R_i per query
    miss = np.ones_like(rel)
    for j in range(min(k, n)):
        miss *= np.clip(n - rel - j, 0, None) / (n - j)
    return float(np.mean(1.0 - miss))


def retrieve(
    z: np.ndarray,
    pair: Pair,
    scorer: Callable,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = 1024,
    relevance: str = "index",
    labels: np.ndarray | None = None,
    ties: str = "pessimistic",
    scorer_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Retrieval metrics of one (queries, candidate) pair over a whole split.

    Args:
      z: (M, N, d) embeddings of the split.
      pair: ``(query modality indices, candidate modality index)``.
      scorer: ``(queries (Q, C, d), cands (N, d)) -> (C, N)`` scores, higher = better.
      ks: the k of R@k.
      chunk_size: queries per chunk (None: all N at once).
      relevance: ``"index"`` or ``"label"`` (then ``labels`` (N,) is required).
      labels: (N,) class labels for ``relevance="label"``.
      ties: tie convention (module docstring).
      scorer_kwargs: extra scorer arguments.
      seed: seeds the ``ties="random"`` draw of ``relevance="label"``.

    Returns:
      ``{"R@k": ..., "median_rank": ..., "mean_rank": ..., "mAP": ...}``.
    """
    z = np.asarray(z, np.float32)
    q_idx, c_idx = pair
    n = z.shape[1]
    queries, cands = jnp.asarray(z[list(q_idx)]), jnp.asarray(z[c_idx])
    if relevance not in RELEVANCE or ties not in TIES:
        raise ValueError(
            f"retrieve: relevance in {RELEVANCE}, ties in {TIES}; got {relevance!r}, {ties!r}."
        )
    if relevance == "label":
        if labels is None:
            raise ValueError("retrieve: relevance='label' needs labels (N,).")
        labels = np.asarray(labels).reshape(n).astype(np.int32)
    else:
        labels = np.zeros((n,), np.int32)
    labels_c = jnp.asarray(labels)
    args = (scorer, tuple(sorted((scorer_kwargs or {}).items())), relevance, ties, tuple(ks))
    try:
        fn = _chunk_fn(*args)
    except TypeError:  # unhashable scorer_kwargs: compile uncached
        fn = _chunk_fn.__wrapped__(*args)
    c = n if chunk_size is None else min(chunk_size, n)
    hits_all, recip_all, rank_all = [], [], []
    for start in range(0, n, c):
        rows = np.arange(start, start + c)
        valid = rows < n
        rows = np.where(valid, rows, 0)  # pad the last chunk with row 0, dropped below
        hits, recip, rank = fn(
            queries[:, rows],
            cands,
            jnp.asarray(rows),
            jnp.asarray(labels[rows]),
            labels_c,
            jnp.asarray(seed, jnp.int32),
        )
        hits_all.append(np.asarray(hits)[valid])
        recip_all.append(np.asarray(recip)[valid])
        rank_all.append(np.asarray(rank)[valid])
    hits_np = np.concatenate(hits_all).astype(np.float64)
    ranks = np.concatenate(rank_all).astype(np.float64)
    out = {f"R@{k}": float(hits_np[:, i].mean()) for i, k in enumerate(ks)}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(ranks.mean())
    out["mAP"] = float(np.concatenate(recip_all).astype(np.float64).mean())
    return out


class Retrieval(Evaluator):
    """Cross-modal retrieval on the test split with the objective's own scorer.

    Results, per pair (named ``q1+q2->c``): ``{pair}/R@{k}``, ``{pair}/median_rank``,
    ``{pair}/mean_rank``, ``{pair}/mAP``; their means over pairs without the prefix
    (``R@1``, ..., ``mAP``); ``num_candidates`` (N); and ``table``, a markdown table
    (rows = pairs, columns = metrics). ``train`` is ignored.

    ``projector``: the run's OVA projector (``projector(rest, m) -> (N, d)``, the MLP
    ablation's or :func:`ovaib_jax.losses.product_projector`), when the objective was
    trained with one: then the score is :func:`ovaib_jax.losses.projector_score`, as in
    training, and each pair must retrieve a modality from all the others (the projector's
    input). ``scorer_kwargs``: the hyper-parameters the run's scorer shares with its
    objective (OVA's ``lam``, ``product_weight``), so that retrieval scores as training
    did; the config's ``scorer_kwargs`` override them. Both passed by the trainer and
    ``ovaib_jax.evaluate``.
    """

    name = "retrieval"
    Config = RetrievalConfig
    needs_train = False

    def extra_keys(self) -> tuple[str, ...]:
        return self.config.candidate_targets

    def _pair_labels(self, labels: np.ndarray | None, test: Embedded, c: int) -> Any:
        """The label of relevance for candidate modality ``c``: ``labels`` joined with
        column c of each of ``candidate_targets``."""
        if not self.config.candidate_targets:
            return labels
        cols = [labels]
        for name in self.config.candidate_targets:
            if name not in test.targets:
                raise ValueError(
                    f"retrieval: no candidate target {name!r}; have {sorted(test.targets)}."
                )
            t = test.targets[name]
            if t.ndim != 2 or t.shape[1] != test.num_modalities:
                raise ValueError(
                    f"retrieval: candidate target {name!r} must be (N, M={test.num_modalities})"
                    f" (one column per modality), got {t.shape}."
                )
            cols.append(t[:, c])
        return joint_labels(*cols)

    def check(self, modality_names: Sequence[str]) -> None:
        names = tuple(modality_names)
        for pair in self.config.pairs or ():
            parse_pair(pair, Embedded(None, {}, {}, names))

    def run(self, train: Embedded | None, test: Embedded, info: RunInfo) -> dict[str, Any]:
        from ovaib_jax import losses

        del train
        cfg = self.config
        seed, projector, scorer_kwargs = info.seed, info.projector, info.scorer_kwargs
        scorer = losses.get_scorer(objective_of(info, self.name))
        if projector is not None:
            scorer = losses.projector_score
        elif info.fuse is not None:
            scorer = losses.fusion_score
        if test.z is None:
            raise ValueError("retrieval: the test split has no embeddings z.")
        pairs = (
            default_pairs(test.num_modalities)
            if cfg.pairs is None
            else [parse_pair(p, test) for p in cfg.pairs]
        )
        labels = None
        if cfg.relevance == "label":
            name = cfg.label_target
            if name is None:
                cls = [
                    t for t in test.default_targets()
                    if test.target_info(t).kind == "classification"
                ]  # fmt: skip
                if not cls:
                    raise ValueError(
                        "retrieval: relevance='label' needs a classification target; the "
                        f"split has {sorted(test.targets)}."
                    )
                name = cls[0]
            if name not in test.targets:
                raise ValueError(f"retrieval: no target {name!r}; have {sorted(test.targets)}.")
            labels = test.targets[name]
        out: dict[str, Any] = {}
        per_pair: dict[str, dict[str, float]] = {}
        chance: dict[str, dict[int, float]] = {}
        for pair in pairs:
            pname = pair_name(pair, test.modality_names)
            kwargs = {} if projector is not None else dict(scorer_kwargs or {})
            if info.fuse is not None and projector is None:
                kwargs.update(fuse=info.fuse, subset=tuple(pair[0]), m=pair[1])
            kwargs.update(cfg.scorer_kwargs)
            if projector is not None:
                others = tuple(i for i in range(test.num_modalities) if i != pair[1])
                if pair[0] != others:
                    raise ValueError(
                        f"retrieval {pname}: a run trained with an OVA projector scores a "
                        "modality only from all the others, in modality order (the "
                        f"projector's input); use the pair "
                        f"{pair_name((others, pair[1]), test.modality_names)!r}."
                    )
                kwargs.update(projector=projector, m=pair[1])
            pair_labels = self._pair_labels(labels, test, pair[1])
            r = retrieve(
                test.z,
                pair,
                scorer,
                ks=cfg.ks,
                chunk_size=cfg.chunk_size,
                relevance=cfg.relevance,
                labels=pair_labels,
                ties=cfg.ties,
                scorer_kwargs=kwargs,
                seed=seed,
            )
            per_pair[pname] = r
            chance[pname] = {k: chance_recall(test.num_examples, k, pair_labels) for k in cfg.ks}
            out.update({f"{pname}/{k}": v for k, v in r.items()})
        metrics = list(next(iter(per_pair.values())))
        for k in metrics:
            out[k] = float(np.mean([r[k] for r in per_pair.values()]))
        out["num_candidates"] = test.num_examples
        for k in cfg.ks:  # the R@k of a random ranking, for the summary's chance column
            out[f"chance/R@{k}"] = float(np.mean([c[k] for c in chance.values()]))
        d = cfg.table_digits
        out["table"] = report.markdown_table(
            ["query -> candidate", *metrics],
            [
                [p, *(f"{r[k]:.1f}" if k.endswith("rank") else f"{r[k]:.{d}f}" for k in metrics)]
                for p, r in per_pair.items()
            ],
        )
        return out
