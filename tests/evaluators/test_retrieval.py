"""Retrieval: known answers, chance level, chunking, ties, label relevance."""

from __future__ import annotations

import math

import chex
import numpy as np
import pytest

from ovaib_jax import evaluators, losses
from ovaib_jax.evaluators import Embedded, RunInfo, retrieve

NAMES = ("a", "b", "c")


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _emb(z, labels=None):
    targets = {} if labels is None else {"label": np.asarray(labels)}
    return Embedded(np.asarray(z, np.float32), {}, targets, NAMES[: len(z)])


def _perfect_z(objective, n=64, d=16, seed=0):
    """(3, n, d) embeddings where candidate c = modality 2 of sample i is the unique best
    match of queries (modalities 0, 1) of sample i for ``objective``'s scorer."""
    rng = np.random.default_rng(seed)
    q0, q1 = _unit(rng.normal(size=(n, d))), _unit(rng.normal(size=(n, d)))
    if objective == "pairwise_clip":  # identical embeddings
        return np.stack([q0, q0, q0])
    if objective in ("ova_ib", "gram"):  # candidate in the span of the queries
        a, b = rng.uniform(0.5, 1.5, size=(2, n, 1))
        return np.stack([q0, q1, _unit(a * q0 - b * q1)])
    if objective == "triangle":  # candidate = first query: zero area
        return np.stack([q0, q1, q0])
    if objective == "symile":  # constant second query: MIP reduces to a dot product
        return np.stack([q0, np.ones((n, d)), q0])
    raise AssertionError(objective)


@pytest.mark.parametrize("objective", ["pairwise_clip", "ova_ib", "gram", "triangle", "symile"])
def test_perfect_embeddings_give_r1_and_map_of_one(objective):
    z = _perfect_z(objective)
    # pessimistic ties: the strictest convention (a tie with another candidate would fail)
    ev = evaluators.get("retrieval")(pairs=["a+b->c"], ties="pessimistic", chunk_size=24)
    r = ev.run(None, _emb(z), RunInfo(objective=objective))
    assert r["a+b->c/R@1"] == 1.0
    assert r["a+b->c/mAP"] == pytest.approx(1.0, abs=1e-6)
    assert r["a+b->c/median_rank"] == 1.0
    assert r["R@1"] == 1.0 and r["num_candidates"] == 64


@pytest.mark.parametrize("objective", ["pairwise_clip", "ova_ib", "gram", "triangle", "symile"])
def test_random_embeddings_are_at_chance(objective):
    n = 400
    z = np.random.default_rng(1).normal(size=(3, n, 16))
    r = evaluators.get("retrieval")(chunk_size=128).run(None, _emb(z), RunInfo(objective=objective))
    # Pooled over the 3 default pairs (rest -> c); per query P(rank <= k) = k / n.
    # Tolerances are 4 binomial standard deviations of one pair (pooling only shrinks them).
    for k in (1, 5, 10):
        p = k / n
        assert abs(r[f"R@{k}"] - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-9, (k, r[f"R@{k}"])
    # sample median of uniform ranks on 1..n: sd ~ n / (2 sqrt(n)) = 10
    assert abs(r["median_rank"] - (n + 1) / 2) < 40
    harmonic = sum(1.0 / i for i in range(1, n + 1))
    assert abs(r["mAP"] - harmonic / n) < 4 * math.sqrt((math.pi**2 / 6) / n / n)
    assert set(k.split("/")[0] for k in r if "->" in k) == {"b+c->a", "a+c->b", "a+b->c"}
    assert r["chance/R@1"] == pytest.approx(1 / n)


def _reference(scores, relevance, labels, ks):
    """Literal per-query loop (continuous scores, no ties)."""
    n = scores.shape[0]
    hits, aps, firsts = [], [], []
    for i in range(n):
        order = np.argsort(-scores[i], kind="stable")
        rel = (labels[order] == labels[i]) if relevance == "label" else (order == i)
        ranks = np.flatnonzero(rel) + 1
        precisions = [(j + 1) / r for j, r in enumerate(ranks)]
        aps.append(np.mean(precisions))
        firsts.append(ranks[0])
        hits.append([ranks[0] <= k for k in ks])
    hits = np.asarray(hits, float)
    out = {f"R@{k}": hits[:, j].mean() for j, k in enumerate(ks)}
    out.update(median_rank=np.median(firsts), mean_rank=np.mean(firsts), mAP=np.mean(aps))
    return out


@pytest.mark.parametrize("relevance", ["index", "label"])
def test_chunked_equals_unchunked_equals_reference(relevance):
    n, ks = 50, (1, 3, 10)
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, n)
    z = rng.normal(size=(3, n, 8)) + 1.5 * rng.normal(size=(4, 8))[labels][None]
    scorer = losses.get_scorer("pairwise_clip")
    results = [
        retrieve(z, ((0, 1), 2), scorer, ks=ks, chunk_size=c, relevance=relevance, labels=labels)
        for c in (None, 7, 1000)
    ]
    for r in results[1:]:
        assert r == pytest.approx(results[0], rel=1e-6)
    scores = np.asarray(scorer(z[:2].astype(np.float32), z[2].astype(np.float32)))
    assert results[0] == pytest.approx(_reference(scores, relevance, labels, ks), rel=1e-5)


def test_ties_conventions_on_collapsed_embeddings():
    n = 40
    z = np.ones((3, n, 8))  # every score equal
    harmonic = sum(1.0 / i for i in range(1, n + 1))
    expected = {
        "pessimistic": {"R@1": 0.0, "R@10": 0.0, "median_rank": n, "mAP": 1.0 / n},
        "optimistic": {"R@1": 1.0, "R@10": 1.0, "median_rank": 1.0, "mAP": 1.0},
        "random": {
            "R@1": 1.0 / n,
            "R@10": 10.0 / n,
            "median_rank": (n + 1) / 2,
            "mAP": harmonic / n,
        },
    }
    for ties, want in expected.items():
        r = retrieve(z, ((0, 1), 2), losses.get_scorer("pairwise_clip"), ties=ties, chunk_size=16)
        for k, v in want.items():
            assert r[k] == pytest.approx(v, rel=1e-5), (ties, k)


def _given_scores(queries, cands):
    """A scorer that returns the single query modality's embeddings as the scores: with
    z[0] = S of shape (N, N), ``retrieve`` ranks the hand-written score matrix S."""
    del cands
    return queries[0]


def _retrieve_scores(scores, **kw):
    scores = np.asarray(scores, np.float32)
    z = np.stack([scores, np.eye(len(scores), dtype=np.float32)])
    return retrieve(z, ((0,), 1), _given_scores, **kw)


def test_ties_below_strictly_higher_candidates_hand_computed():
    """Row 0: two candidates strictly above the true one, which ties with two more (its
    rank is uniform on {3, 4, 5} under random tie-breaking); row 1: a tied block of 3 at the
    top (ranks {1, 2, 3}); row 2: one candidate strictly above, no tie (rank 2); rows 3-5:
    unique best."""
    s = np.zeros((6, 6))
    s[0] = [0.5, 0.9, 0.9, 0.5, 0.5, 0.1]
    s[1] = [0.2, 0.7, 0.7, 0.1, 0.7, 0.0]
    s[2] = [0.0, 0.6, 0.3, 0.0, 0.1, 0.2]
    s[3:] = np.eye(6)[3:]
    ks = (1, 3, 4)
    expected = {
        "random": {
            "R@1": (0 + 1 / 3 + 0 + 3) / 6,
            "R@3": (1 / 3 + 1 + 1 + 3) / 6,
            "R@4": (2 / 3 + 1 + 1 + 3) / 6,
            "median_rank": 1.5,  # expected ranks 4, 2, 2, 1, 1, 1
            "mean_rank": 11 / 6,
            "mAP": ((1 / 3 + 1 / 4 + 1 / 5) / 3 + (1 + 1 / 2 + 1 / 3) / 3 + 1 / 2 + 3) / 6,
        },
        "pessimistic": {  # ranks 5, 3, 2, 1, 1, 1
            "R@1": 3 / 6,
            "R@3": 5 / 6,
            "R@4": 5 / 6,
            "median_rank": 1.5,
            "mean_rank": 13 / 6,
            "mAP": (1 / 5 + 1 / 3 + 1 / 2 + 3) / 6,
        },
        "optimistic": {  # ranks 3, 1, 2, 1, 1, 1
            "R@1": 4 / 6,
            "R@3": 1.0,
            "R@4": 1.0,
            "median_rank": 1.0,
            "mean_rank": 9 / 6,
            "mAP": (1 / 3 + 1 + 1 / 2 + 3) / 6,
        },
    }
    for ties, want in expected.items():
        for chunk in (None, 4):
            got = _retrieve_scores(s, ks=ks, ties=ties, chunk_size=chunk)
            chex.assert_trees_all_close(got, want, rtol=1e-6, custom_message=f"{ties}, {chunk}")


def test_random_ties_equal_pessimistic_on_continuous_scores():
    """Without ties every convention gives the same ranks: random must equal pessimistic
    (and optimistic, and the literal per-query reference)."""
    n, ks = 50, (1, 5, 10)
    z = np.random.default_rng(5).normal(size=(3, n, 8))
    scorer = losses.get_scorer("pairwise_clip")
    results = {
        ties: retrieve(z, ((0, 1), 2), scorer, ks=ks, ties=ties, chunk_size=16)
        for ties in ("pessimistic", "optimistic", "random")
    }
    scores = np.asarray(scorer(z[:2].astype(np.float32), z[2].astype(np.float32)))
    want = _reference(scores, "index", np.zeros(n), ks)
    assert want["mAP"] < 0.5  # far from 1: a rank mistaken for 1 would show
    for ties, got in results.items():
        chex.assert_trees_all_close(got, want, rtol=1e-5, custom_message=ties)


@pytest.mark.parametrize("relevance", ["index", "label"])
def test_nan_scores_rank_last(relevance):
    """A NaN score (e.g. a NaN embedding) ranks below every number, never first: row 0's
    true candidate scores NaN (rank N = 5 under every convention); row 2 has a NaN
    non-true candidate and is still ranked first."""
    s = np.eye(5)
    s[0] = [np.nan, 0.1, 0.2, 0.3, 0.4]
    s[2, 1] = np.nan
    want = {"R@1": 4 / 5, "R@5": 1.0, "median_rank": 1.0, "mean_rank": 9 / 5}
    want["mAP"] = (1 / 5 + 4) / 5
    for ties in ("pessimistic", "optimistic", "random"):
        got = _retrieve_scores(
            s, ks=(1, 5), ties=ties, chunk_size=None, relevance=relevance, labels=np.arange(5)
        )
        chex.assert_trees_all_close(got, want, rtol=1e-6, custom_message=ties)


def test_label_relevance_with_class_prototypes():
    """Every candidate of the query's class scores the (tied) maximum: label mAP = 1."""
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(8), 5)  # 8 classes of 5 (n = 40 and chunks of 16, as above)
    protos = _unit(rng.normal(size=(8, 16)))[labels]
    z = np.stack([protos, protos, protos])
    for ties in ("pessimistic", "optimistic", "random"):
        ev = evaluators.get("retrieval")(
            relevance="label", ties=ties, pairs=[(("a", "b"), "c")], chunk_size=16
        )
        r = ev.run(None, _emb(z, labels), RunInfo(objective="pairwise_clip"))
        assert r["mAP"] == pytest.approx(1.0, abs=1e-6) and r["R@1"] == 1.0
    # With index relevance the own sample is one of 5 tied candidates.
    r = evaluators.get("retrieval")(ties="random", pairs=["a+b->c"], chunk_size=16).run(
        None, _emb(z, labels), RunInfo(objective="pairwise_clip")
    )
    assert r["median_rank"] == pytest.approx(3.0) and r["R@1"] == pytest.approx(1 / 5)
    assert r["mAP"] == pytest.approx(sum(1 / i for i in range(1, 6)) / 5)


def test_pairs_parsing_and_errors():
    z = np.random.default_rng(4).normal(size=(3, 20, 4))
    emb = _emb(z)
    r = evaluators.get("retrieval")(pairs=["a->c", ((0, "b"), -1), ("b", "a")]).run(
        None, emb, RunInfo(objective="pairwise_clip")
    )
    assert {"a->c/R@1", "a+b->c/R@1", "b->a/R@1"} <= set(r)
    assert r["table"].count("\n") == 2 + 3 - 1  # header, rule, 3 rows
    with pytest.raises(ValueError, match="not containing the candidate"):
        evaluators.get("retrieval")(pairs=["a+c->c"]).run(
            None, emb, RunInfo(objective="pairwise_clip")
        )
    with pytest.raises(ValueError, match="needs objective"):
        evaluators.get("retrieval")().run(None, emb, RunInfo())
    with pytest.raises(ValueError, match="needs a classification target"):
        evaluators.get("retrieval")(relevance="label").run(
            None, emb, RunInfo(objective="pairwise_clip")
        )


def test_label_random_ties_are_seeded_and_chunk_invariant():
    n = 40
    z = np.ones((3, n, 8))
    labels = np.arange(n) % 4
    scorer = losses.get_scorer("pairwise_clip")

    def run(**kw):
        return retrieve(z, ((0, 1), 2), scorer, relevance="label", labels=labels, **kw)

    rand = run(ties="random", chunk_size=None, seed=3)
    assert run(ties="random", chunk_size=16, seed=3) == rand
    assert run(ties="random", chunk_size=16, seed=4) != rand
    lo = run(ties="pessimistic", chunk_size=16)["mAP"]
    hi = run(ties="optimistic", chunk_size=16)["mAP"]
    assert lo < rand["mAP"] < hi and hi == 1.0
    # pessimistic: the 10 relevant candidates come after the 30 others
    assert lo == pytest.approx(np.mean([(j + 1) / (30 + j + 1) for j in range(10)]))
    # E[AP] of a uniformly random order, R relevant among N: (H_N + (R-1)/(N-1) (N - H_N)) / N
    h = sum(1.0 / i for i in range(1, n + 1))
    assert abs(rand["mAP"] - (h + 9 / 39 * (n - h)) / n) < 0.05


def test_projector_run_is_scored_with_its_projector():
    # c = a * b elementwise (signs +-1): the product projector finds every true triple,
    # the span test of the OVA score cannot tell them from the others.
    rng = np.random.default_rng(3)
    a, b = (rng.choice([-1.0, 1.0], size=(200, 16)) for _ in range(2))
    emb = Embedded(np.stack([a, b, a * b]).astype(np.float32), {}, {}, ("a", "b", "c"))
    ev = evaluators.get("retrieval")(pairs=["a+b->c", "a+c->b"])
    plain = ev.run(None, emb, RunInfo(objective="ova_ib"))
    with_projector = ev.run(
        None, emb, RunInfo(objective="ova_ib", projector=losses.product_projector)
    )
    assert with_projector["a+b->c/R@1"] == 1.0 and with_projector["a+c->b/R@1"] == 1.0
    assert plain["a+b->c/R@1"] < 0.2
    with pytest.raises(ValueError, match=r"from all the others.*'a\+b->c'"):
        evaluators.get("retrieval")(pairs=["b+a->c"]).run(
            None, emb, RunInfo(objective="ova_ib", projector=losses.product_projector)
        )


def test_chance_recall_hand_values_and_a_random_ranking():
    """Index relevance: k/n. Label relevance, n = 4, labels 0 0 1 1 (R = 2 per query):
    R@1 = 2/4, R@2 = 1 - (2/4)(1/3) = 5/6; and a Monte-Carlo of random rankings."""
    from ovaib_jax.evaluators.retrieval import chance_recall

    assert chance_recall(400, 5) == pytest.approx(5 / 400) and chance_recall(3, 5) == 1.0
    labels = np.array([0, 0, 1, 1])
    assert chance_recall(4, 1, labels) == pytest.approx(0.5)
    assert chance_recall(4, 2, labels) == pytest.approx(5 / 6)
    assert chance_recall(4, 3, labels) == pytest.approx(1.0)  # only 2 misses exist
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=60)
    ranks = np.argsort(rng.random((4000, 60)), axis=1)[:, :5]  # random top 5 per trial
    queries = rng.integers(0, 60, size=4000)
    hits = np.mean([np.any(labels[r] == labels[q]) for r, q in zip(ranks, queries)])
    assert chance_recall(60, 5, labels) == pytest.approx(hits, abs=0.02)


def test_label_relevance_reports_its_chance_level():
    z = np.random.default_rng(2).normal(size=(3, 40, 8))
    emb = _emb(z, labels=np.arange(40) % 4)
    ev = evaluators.get("retrieval")(relevance="label", label_target="label", ks=(1, 5))
    r = ev.run(None, emb, RunInfo(objective="pairwise_clip"))
    # 10 of each class among 40: R@1 = 10/40; R@5 = 1 - C(30,5)/C(40,5)
    assert r["chance/R@1"] == pytest.approx(0.25)
    assert r["chance/R@5"] == pytest.approx(1 - math.comb(30, 5) / math.comb(40, 5))


def test_candidate_targets_join_the_candidate_column_to_the_label():
    """Pair Q -> c: relevant iff same label AND same bit in column c; checked against the
    literal per-query loop on the joint label ``2 * label + bits[:, c]``, for every c."""
    n, ks = 60, (1, 5)
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, n)
    bits = rng.integers(0, 2, (n, 3))
    z = rng.normal(size=(3, n, 8)) + 1.5 * rng.normal(size=(3, 8))[labels][None]
    z[2] += 2.0 * bits[:, 2:3]  # the candidate of a+b->c shows its bit, the queries do not
    emb = Embedded(z.astype(np.float32), {}, {"label": labels, "bits": bits}, NAMES)
    ev = evaluators.get("retrieval")(
        relevance="label", label_target="label", candidate_targets="bits", ks=ks
    )
    assert ev.extra_keys() == ("bits",)
    r = ev.run(None, emb, RunInfo(objective="pairwise_clip"))
    scorer = losses.get_scorer("pairwise_clip")
    chances = []
    for pair, c in (("b+c->a", 0), ("a+c->b", 1), ("a+b->c", 2)):
        q = tuple(i for i in range(3) if i != c)
        scores = np.asarray(scorer(z[list(q)].astype(np.float32), z[c].astype(np.float32)))
        joint = 2 * labels + bits[:, c]
        ref = _reference(scores, "label", joint, ks)
        for k, v in ref.items():
            assert r[f"{pair}/{k}"] == pytest.approx(v, rel=1e-5), (pair, k)
        sizes = np.bincount(joint)[joint]  # R_i: samples sharing query i's joint label
        chances.append(np.mean(sizes / n))  # chance R@1 = mean R_i / n
    assert r["chance/R@1"] == pytest.approx(np.mean(chances))
    # a bit column joined: strictly fewer relevant candidates than the label alone
    plain = evaluators.get("retrieval")(relevance="label", label_target="label", ks=ks)
    assert r["chance/R@1"] < plain.run(None, emb, RunInfo(objective="pairwise_clip"))["chance/R@1"]


def test_candidate_targets_errors_name_the_fix():
    with pytest.raises(ValueError, match="relevance='label'"):
        evaluators.get("retrieval")(candidate_targets=("bits",))
    z = np.random.default_rng(0).normal(size=(3, 10, 4))
    emb = Embedded(
        z.astype(np.float32), {}, {"label": np.arange(10) % 2, "flat": np.arange(10)}, NAMES
    )
    for name, match in (("nope", "no candidate target 'nope'"), ("flat", r"\(N, M=3\)")):
        ev = evaluators.get("retrieval")(
            relevance="label", label_target="label", candidate_targets=(name,)
        )
        with pytest.raises(ValueError, match=match):
            ev.run(None, emb, RunInfo(objective="pairwise_clip"))


def test_inbatch_nan_scores_rank_last_as_in_split_retrieval():
    """In-batch retrieval ranks a NaN score as split retrieval does (last, never first):
    every true pair scores lowest (candidate c = -query) and candidate c of 4 samples is
    NaN, so no sample is retrieved; ``#{s > NaN} = 0`` had counted the 4 as hits."""
    n = 32
    base = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    z = np.stack([base, base, -base])
    z[2, :4] = np.nan
    info = RunInfo(objective="pairwise_clip", batch_size=n)
    inbatch = evaluators.create("inbatch_retrieval").run(None, _emb(z), info)
    split = evaluators.create("retrieval", {"ties": "optimistic"}).run(None, _emb(z), info)
    assert inbatch["c/top1"] == 0.0 and split["a+b->c/R@1"] == 0.0
    # One NaN non-true candidate of an otherwise perfect batch changes nothing.
    z = np.stack([base, base, base])
    z[2, 5] = np.nan
    assert evaluators.create("inbatch_retrieval").run(None, _emb(z), info)["c/top1"] == 31 / 32
    # NaN queries (modality a of 4 samples): their rows score NaN everywhere, all tied;
    # never a hit, in batch or over the split, whatever the tie convention.
    z = np.stack([base, base, base])
    z[0, :4] = np.nan
    assert evaluators.create("inbatch_retrieval").run(None, _emb(z), info)["c/top1"] == 28 / 32
    for ties in ("pessimistic", "optimistic", "random"):
        split = evaluators.create("retrieval", {"ties": ties}).run(None, _emb(z), info)
        assert split["a+b->c/R@1"] == pytest.approx(28 / 32), ties
        assert split["a+b->c/mean_rank"] == pytest.approx((28 + 4 * n) / n), ties  # last: n
    # Last is still a place: top-k with k >= N holds every candidate, the NaN one too (in a
    # batch of 4, top-5 accuracy is 1 in batch as over the split, NaN true scores or not).
    z = np.stack([base[:4], base[:4], -base[:4]])
    z[2] = np.nan
    info = RunInfo(objective="pairwise_clip", batch_size=4)
    inbatch = evaluators.create("inbatch_retrieval").run(None, _emb(z), info)
    split = evaluators.create("retrieval").run(None, _emb(z), info)
    assert inbatch["c/top1"] == 0.0 and split["a+b->c/R@1"] == 0.0
    assert inbatch["c/top5"] == 1.0 and split["a+b->c/R@5"] == 1.0


@pytest.mark.parametrize("objective", ["pairwise_clip", "ova_ib"])
def test_inbatch_ties_count_against_the_true_candidate(objective):
    """In-batch retrieval counts ties as split retrieval does by default (pessimistic):
    collapsed embeddings, every score tied, retrieve nothing (they scored top-1 = 1 when
    only strictly higher scores counted), and a true candidate tied with one other of 8
    ranks second."""
    n = 8
    info = RunInfo(objective=objective, batch_size=n)
    z = np.ones((3, n, 4), np.float32)
    inbatch = evaluators.create("inbatch_retrieval").run(None, _emb(z), info)
    split = evaluators.create("retrieval").run(None, _emb(z), info)
    assert inbatch["top1"] == 0.0 and inbatch["top5"] == 0.0 and split["R@1"] == 0.0
    base = _unit(np.random.default_rng(1).normal(size=(n, 4))).astype(np.float32)
    z = np.stack([base, base, base])
    z[:, 1] = z[:, 0]  # samples 0 and 1 identical in every modality: tied pairs
    inbatch = evaluators.create("inbatch_retrieval", {"ks": (1, 2)}).run(None, _emb(z), info)
    assert inbatch["top1"] == pytest.approx(6 / 8) and inbatch["top2"] == 1.0


def test_default_label_target_skips_candidate_targets():
    """relevance='label' without label_target takes the first (N,) classification target,
    also when an (N, M) candidate target (e.g. colour bits) is in the split."""
    n = 20
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    z = rng.normal(size=(3, n, 4)).astype(np.float32)
    bits = rng.integers(0, 2, (n, 3)).astype(np.uint8)
    emb = Embedded(z, {}, {"bits": bits, "label": labels}, NAMES)
    info = RunInfo(objective="pairwise_clip")
    got = evaluators.create("retrieval", {"relevance": "label", "candidate_targets": ["bits"]}).run(
        None, emb, info
    )
    want = evaluators.create(
        "retrieval", {"relevance": "label", "label_target": "label", "candidate_targets": ["bits"]}
    ).run(None, emb, info)
    assert got == want
