"""Embedded, embed_split, the registry and config checking."""

from __future__ import annotations

import numpy as np
import pytest

from ovaib_jax import evaluators
from ovaib_jax.evaluators import Embedded, TargetInfo, embed_split


class _Spec:
    """A DatasetSpec look-alike (modalities and targets with names)."""

    class _M:
        def __init__(self, name):
            self.name = name

    def __init__(self):
        self.modalities = (self._M("a"), self._M("b"))
        self.targets = (TargetInfo("label", "classification", num_classes=5),)


def _embed_fn(batch):
    z = np.stack([batch["a"] * 2.0, batch["b"] + 1.0])
    return z, {"a": batch["a"][:, :2], "b": batch["b"].reshape(len(batch["b"]), 2, 2)}


def _batches(n_batches=3, b=4, pad_last=0):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_batches):
        batch = {
            "a": rng.normal(size=(b, 4)).astype(np.float32),
            "b": rng.normal(size=(b, 4)).astype(np.float32),
            "label": np.arange(i * b, (i + 1) * b) % 5,
            "valid": np.ones((b,), bool),
        }
        if i == n_batches - 1 and pad_last:
            batch["valid"][-pad_last:] = False
        out.append(batch)
    return out


def test_embed_split_concatenates_in_order_and_uses_spec():
    batches = _batches()
    emb = embed_split(_embed_fn, batches, spec=_Spec())
    assert emb.modality_names == ("a", "b")
    assert emb.z.shape == (2, 12, 4)
    np.testing.assert_allclose(emb.z[0], 2.0 * np.concatenate([b["a"] for b in batches]))
    assert emb.reps["a"].shape == (12, 2)
    assert emb.reps["b"].shape == (12, 4)  # flattened
    np.testing.assert_array_equal(emb.targets["label"], np.arange(12) % 5)
    info = emb.target_info("label")
    assert (info.kind, info.num_classes) == ("classification", 5)  # from the spec, not inferred


def test_embed_split_drops_padding_rows_and_limits_batches():
    emb = embed_split(_embed_fn, _batches(pad_last=3), target_names=["label"], valid_key="valid")
    assert emb.num_examples == 9
    assert emb.modality_names == ("a", "b")  # from the reps keys
    assert emb.target_info("label").num_classes == 5  # inferred: max id 8 % 5 = 4 -> 5
    emb2 = embed_split(lambda b: _embed_fn(b)[0], _batches(), max_batches=2)
    assert emb2.z.shape[1] == 8 and emb2.reps == {} and emb2.modality_names == ("m0", "m1")


def test_embedded_validation_and_inference():
    with pytest.raises(ValueError, match="number of examples"):
        Embedded(np.zeros((2, 5, 3)), {"a": np.zeros((4, 2))}, {}, ("a", "b"))
    with pytest.raises(ValueError, match=r"\(M, N, d\)"):
        Embedded(np.zeros((3, 5, 3)), {}, {}, ("a", "b"))
    emb = Embedded(
        None, {}, {"y": np.zeros((6, 2), np.float32), "c": np.array([0, 3])[[0, 1] * 3]}, ("a",)
    )
    assert emb.target_info("y") == TargetInfo("y", "regression", dim=2)
    assert emb.target_info("c") == TargetInfo("c", "classification", num_classes=4)
    with pytest.raises(ValueError, match="Unknown modality 'q'"):
        emb.modality_index("q")


def test_registry_names_and_errors():
    assert evaluators.names() == (
        "heldout_loss",
        "inbatch_retrieval",
        "downstream",
        "modality_subsets",
        "retrieval",
        "mi_bounds",
    )
    # One protocol: whether the train split is embedded is the evaluator's own word.
    needs_train = {n for n in evaluators.names() if evaluators.get(n).needs_train}
    assert needs_train == {"downstream", "modality_subsets"}
    with pytest.raises(ValueError, match="valid evaluators: heldout_loss, inbatch_retrieval"):
        evaluators.get("probe")
    for name in evaluators.names():
        with pytest.raises(ValueError, match=r"unknown config key\(s\) \['nope'\]; valid keys"):
            evaluators.get(name)(nope=1)
    ev = evaluators.create("retrieval", {"ks": [1, 2], "chunk_size": 8})
    assert ev.config.ks == (1, 2)  # JSON lists become tuples
    with pytest.raises(ValueError, match="ties must be one of"):
        evaluators.get("retrieval")(ties="mean")
    with pytest.raises(ValueError, match="probe must be one of"):
        evaluators.get("downstream")(probe="svm")


def test_scalars_flattens_and_drops_tables():
    res = {"retrieval": {"R@1": 0.5, "table": "| x |", "num_candidates": 10}}
    assert evaluators.scalars(res) == {"retrieval/R@1": 0.5, "retrieval/num_candidates": 10.0}


def test_default_targets():
    """All but per-modality (N, M, k) arrays and undeclared integer arrays of more than
    one axis (a retrieval candidate target such as colour bits); a declared target stays
    whatever its shape (its spec says how to use it)."""
    n = 6
    targets = {
        "label": np.arange(n) % 2,
        "reg": np.zeros((n, 2), np.float32),
        "bits": np.zeros((n, 3), np.uint8),
        "declared": np.zeros((n, 2), np.int32),
        "per_modality": np.zeros((n, 3, 2), np.float32),
    }
    specs = {"declared": TargetInfo("declared", "regression", dim=2)}
    emb = Embedded(None, {}, targets, ("a", "b", "c"), target_specs=specs)
    assert emb.default_targets() == ["label", "reg", "declared"]


def test_a_string_for_a_tuple_key_is_its_comma_separated_items():
    """Keys that default to None (not in the config) reach the evaluator as the string
    typed, e.g. ``evaluate --set evaluator_kwargs.downstream.modalities=rgb,force``: a
    tuple field takes its comma-separated items (a string was split into letters:
    modalities ['r', 'g', 'b'], pairs 'r', 'g', ...), and a number one item."""
    import ml_collections

    from ovaib_jax import configs
    from ovaib_jax.evaluators import RunInfo

    cfg = ml_collections.ConfigDict({"evaluator_kwargs": {"downstream": {}, "retrieval": {}}})
    configs.apply_overrides(
        cfg,
        [
            "evaluator_kwargs.downstream.modalities=rgb,force",
            "evaluator_kwargs.downstream.targets=label",
            "evaluator_kwargs.retrieval.pairs=rgb+force->depth",
            "evaluator_kwargs.retrieval.ks=2",
        ],
    )
    down = evaluators.create("downstream", cfg.evaluator_kwargs.downstream).config
    assert down.modalities == ("rgb", "force") and down.targets == ("label",)
    ev = evaluators.create("retrieval", cfg.evaluator_kwargs.retrieval)
    assert ev.config.pairs == ("rgb+force->depth",) and ev.config.ks == (2,)
    assert evaluators.create("downstream", {"hidden": "8, 4"}).config.hidden == (8, 4)
    z = np.random.default_rng(0).normal(size=(3, 12, 4)).astype(np.float32)
    emb = Embedded(z, {}, {}, ("rgb", "force", "depth"))
    out = ev.run(None, emb, RunInfo(objective="pairwise_clip"))
    assert set(out) >= {"rgb+force->depth/R@2", "R@2"}
