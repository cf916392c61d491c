"""The grain pipeline: seeded epochs, exact resume from JSON state, per-process sharding."""

import json

import numpy as np
import pytest

from ovaib_jax import data


def toy_source(n: int) -> list[dict]:
    """n examples whose ``id`` is their index (so every batch says what it holds)."""
    return [{"id": np.int64(i), "x": np.full((3,), i, np.float32)} for i in range(n)]


def ids(batches) -> list[int]:
    return [int(i) for b in batches for i in b["id"]]


def take(it, k: int) -> list[dict]:
    return [next(it) for _ in range(k)]


def test_batches_shapes_and_values():
    it = data.make_iterator(toy_source(10), batch_size=4, seed=0, prefetch=0)
    batch = next(it)
    assert batch["id"].shape == (4,) and batch["x"].shape == (4, 3)
    assert batch["x"].dtype == np.float32
    # Each row of x belongs to the example named by id.
    np.testing.assert_array_equal(batch["x"], np.repeat(batch["id"][:, None], 3, 1))


def test_every_epoch_is_a_fresh_permutation():
    n, epochs = 12, 4
    it = data.make_iterator(toy_source(n), batch_size=3, seed=5, num_epochs=epochs, prefetch=0)
    stream = ids(list(it))
    assert len(stream) == n * epochs
    orders = [stream[e * n : (e + 1) * n] for e in range(epochs)]
    for order in orders:
        assert sorted(order) == list(range(n))
    assert len({tuple(o) for o in orders}) == epochs  # reshuffled every epoch
    assert orders[0] != list(range(n))


def test_no_shuffle_keeps_source_order_and_finite_epochs_stop():
    it = data.make_iterator(
        toy_source(7),
        batch_size=2,
        seed=0,
        shuffle=False,
        num_epochs=2,
        drop_remainder=False,
        prefetch=0,
    )
    batches = list(it)
    assert ids(batches) == list(range(7)) * 2
    assert [len(b["id"]) for b in batches] == [2] * 7  # 14 examples; batches span epochs
    it = data.make_iterator(
        toy_source(7),
        batch_size=4,
        seed=0,
        shuffle=False,
        num_epochs=1,
        drop_remainder=True,
        prefetch=0,
    )
    assert ids(list(it)) == [0, 1, 2, 3]


def test_same_seed_same_batches_other_seed_other_batches():
    a = ids(take(data.make_iterator(toy_source(50), batch_size=5, seed=3), 10))
    b = ids(take(data.make_iterator(toy_source(50), batch_size=5, seed=3, prefetch=0), 10))
    c = ids(take(data.make_iterator(toy_source(50), batch_size=5, seed=4), 10))
    assert a == b
    assert a != c


@pytest.mark.parametrize("consumed", [2, 5, 9])  # mid first epoch, just before, after boundary
@pytest.mark.parametrize("prefetch", [0, 3])
def test_resume_from_json_state_is_exact(consumed, prefetch):
    # 13 examples, batch 3: the first epoch ends inside batch 5 (index 4).
    kwargs = dict(batch_size=3, seed=11, prefetch=prefetch)
    reference = take(data.make_iterator(toy_source(13), **kwargs), 16)
    it = data.make_iterator(toy_source(13), **kwargs)
    take(it, consumed)
    state = json.loads(json.dumps(it.get_state()))
    resumed = data.make_iterator(toy_source(13), **kwargs)
    resumed.set_state(state)
    got = take(resumed, 16 - consumed)
    assert ids(got) == ids(reference[consumed:])
    for g, r in zip(got, reference[consumed:]):
        np.testing.assert_array_equal(g["x"], r["x"])


def test_resume_of_finite_run_ends_at_the_same_place():
    kwargs = dict(batch_size=4, seed=2, num_epochs=3, prefetch=2)
    reference = ids(list(data.make_iterator(toy_source(10), **kwargs)))
    it = data.make_iterator(toy_source(10), **kwargs)
    head = ids(take(it, 3))
    resumed = data.make_iterator(toy_source(10), **kwargs)
    resumed.set_state(json.loads(json.dumps(it.get_state())))
    assert head + ids(list(resumed)) == reference
    assert len(reference) == 28  # 30 examples, incomplete last batch dropped


@pytest.mark.parametrize("n,epochs", [(24, 2), (21, 2), (21, 1)])
def test_two_processes_cover_each_example_once_per_epoch(n, epochs):
    per_process, count = 3, 2
    streams = []
    for p in range(count):
        it = data.make_iterator(
            toy_source(n),
            batch_size=per_process,
            seed=7,
            num_epochs=epochs,
            process_index=p,
            process_count=count,
            prefetch=0,
        )
        streams.append(list(it))
    assert len(streams[0]) == len(streams[1])  # same number of steps on every process
    # Interleave the processes' batches back into global batches of 6.
    merged = [int(i) for pair in zip(*streams) for b in pair for i in b["id"]]
    assert len(merged) == (epochs * n) // 6 * 6  # only the incomplete global batch dropped
    for e in range(len(merged) // n):
        assert sorted(merged[e * n : (e + 1) * n]) == list(range(n))  # once per epoch
    # The global stream is what a single process with the global batch would read.
    single = data.make_iterator(
        toy_source(n), batch_size=per_process * count, seed=7, num_epochs=epochs, prefetch=0
    )
    assert merged == ids(list(single))


def test_infinite_sharded_streams_are_disjoint_per_epoch():
    n, count = 20, 2
    its = [
        data.make_iterator(
            toy_source(n), batch_size=5, seed=1, process_index=p, process_count=count, prefetch=0
        )
        for p in range(count)
    ]
    # 2 global batches of 10 per epoch.
    for _ in range(3):
        epoch = [i for _ in range(2) for it in its for i in ids([next(it)])]
        assert sorted(epoch) == list(range(n))


def test_transform_is_applied_per_example():
    def double(ex):
        return {**ex, "x": ex["x"] * 2}

    it = data.make_iterator(toy_source(6), batch_size=3, seed=0, transform=double, prefetch=0)
    batch = next(it)
    np.testing.assert_array_equal(batch["x"][:, 0], 2 * batch["id"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="process_index"):
        data.make_iterator(toy_source(4), batch_size=2, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        data.make_iterator(toy_source(4), batch_size=0, seed=0)
    with pytest.raises(ValueError, match="empty"):
        data.make_iterator([], batch_size=1, seed=0)


def test_load_arrays_stacks_in_source_order():
    arrays = data.load_arrays(toy_source(5), chunk=2)
    np.testing.assert_array_equal(arrays["id"], np.arange(5))
    assert arrays["x"].shape == (5, 3)


def test_steps_per_epoch():
    assert data.steps_per_epoch(100, batch_size=8, process_count=2) == 6


def test_tfds_source_with_threads_resumes_exactly(tmp_path):
    src = data.make_source(
        "ovaib_parity", "train", data_dir=tmp_path, config="m3", k=1, num_train=50, num_test=5
    )
    kwargs = dict(batch_size=8, seed=0, prefetch=2)
    reference = take(data.make_iterator(src, **kwargs), 9)  # crosses the epoch at 50
    assert reference[0]["x0"].shape == (8, 32) and reference[0]["label"].dtype == np.int64
    it = data.make_iterator(src, **kwargs)
    take(it, 5)
    resumed = data.make_iterator(src, **kwargs)
    resumed.set_state(json.loads(json.dumps(it.get_state())))
    for got, want in zip(take(resumed, 4), reference[5:]):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


# --------------------------------------------------------------------------- batched reads


def assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for key in w:
            assert g[key].dtype == w[key].dtype, key
            np.testing.assert_array_equal(g[key], w[key])


def both_paths(source, k: int | None = None, **kwargs) -> tuple[list[dict], list[dict]]:
    """(batched, per-example reference) batches of the same pipeline: all, or the first k."""
    out = []
    for batched in (True, False):
        it = data.make_iterator(source, batched=batched, **kwargs)
        out.append(list(it) if k is None else take(it, k))
    return out[0], out[1]


class CountingSource:
    """A list source with batched reads (``__getitems__``) that counts its reads."""

    def __init__(self, examples):
        self.examples, self.items, self.batches = examples, 0, 0

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        self.items += 1
        return self.examples[i]

    def __getitems__(self, indices):
        self.batches += 1
        return [self.examples[i] for i in indices]


def array_source(n: int) -> data.ArraySource:
    return data.ArraySource(data.load_arrays(toy_source(n)))


SOURCES = {
    "list": toy_source,  # per-item reads
    "getitems": lambda n: CountingSource(toy_source(n)),  # batched reads, then stacked
    "columns": array_source,  # columnar get_batch
}


@pytest.mark.parametrize("source_kind", sorted(SOURCES))
@pytest.mark.parametrize(
    "n,batch_size,num_epochs,drop_remainder,shuffle",
    [
        (13, 3, 3, True, True),
        (13, 3, 3, False, True),
        (13, 3, None, True, True),
        (7, 4, 2, False, False),
        (5, 12, 4, False, True),  # batches span up to four epochs
        (5, 12, None, True, True),
    ],
)
@pytest.mark.parametrize("process_count", [1, 2, 3])
def test_batched_path_equals_per_example_reference(
    source_kind, n, batch_size, num_epochs, drop_remainder, shuffle, process_count
):
    src = SOURCES[source_kind](n)
    for p in range(process_count):
        kwargs = dict(
            batch_size=batch_size,
            seed=3,
            shuffle=shuffle,
            num_epochs=num_epochs,
            drop_remainder=drop_remainder,
            process_index=p,
            process_count=process_count,
        )
        got, want = both_paths(src, k=None if num_epochs else 9, prefetch=0, **kwargs)
        assert_same_batches(got, want)
        assert len(data.make_dataset(src, **kwargs)) == len(
            data.make_dataset(src, batched=False, **kwargs)
        )


def test_batched_path_reads_once_per_batch_and_applies_both_transforms():
    src = CountingSource(toy_source(20))
    it = data.make_iterator(src, batch_size=8, seed=0, num_epochs=2, prefetch=0)
    assert len(list(it)) == 5
    assert (src.batches, src.items) == (5, 0)  # one __getitems__ per batch, no src[i]

    calls = {"example": 0, "batch": 0}

    def per_example(ex):
        calls["example"] += 1
        return {**ex, "x": ex["x"] * 2}

    def per_batch(batch):
        calls["batch"] += 1
        return {**batch, "x": batch["x"] + 1, "n": np.full(len(batch["id"]), len(batch["id"]))}

    for source in (toy_source(10), array_source(10)):
        kwargs = dict(batch_size=4, seed=1, num_epochs=2, prefetch=0, drop_remainder=False)
        kwargs.update(transform=per_example, batch_transform=per_batch)
        got, want = both_paths(source, **kwargs)
        assert_same_batches(got, want)
        np.testing.assert_array_equal(got[0]["x"][:, 0], 2 * got[0]["id"] + 1)
        assert [len(b["n"]) for b in got] == [4, 4, 4, 4, 4]
    assert calls == {"example": 4 * 20, "batch": 4 * 5}


def test_array_source_reads_columns():
    src = array_source(6)
    assert len(src) == 6 and "6 examples" in repr(src)
    np.testing.assert_array_equal(src.get_batch([4, 1])["x"], [[4] * 3, [1] * 3])
    assert int(src[2]["id"]) == 2 and [int(e["id"]) for e in src.__getitems__([5, 0])] == [5, 0]
    with pytest.raises(ValueError, match="different lengths"):
        data.ArraySource({"a": np.zeros(3), "b": np.zeros(4)})
    assert set(data.load_arrays(toy_source(5), keys=["x"])) == {"x"}


def test_permutation_is_pinned():
    """The stream order is part of every saved iterator state: it must never change
    silently (numpy upgrades included)."""
    it = data.make_iterator(toy_source(10), batch_size=10, seed=0, prefetch=0)
    assert ids(take(it, 2)) == [
        *[3, 2, 1, 8, 6, 0, 7, 4, 5, 9],
        *[7, 4, 5, 1, 9, 8, 6, 2, 0, 3],
    ]
    with pytest.raises(ValueError, match="seed"):
        data.make_iterator(toy_source(10), batch_size=2, seed=-1)


@pytest.mark.parametrize("prefetch", [0, 3])
def test_states_are_interchangeable_between_paths(prefetch):
    kwargs = dict(batch_size=3, seed=11, prefetch=prefetch)
    reference = take(data.make_iterator(toy_source(13), batched=False, **kwargs), 12)
    it = data.make_iterator(toy_source(13), batched=False, **kwargs)
    take(it, 5)
    resumed = data.make_iterator(array_source(13), **kwargs)
    resumed.set_state(json.loads(json.dumps(it.get_state())))
    assert_same_batches(take(resumed, 7), reference[5:])


def test_tfds_source_batched_equals_reference(tmp_path, monkeypatch):
    src = data.make_source(
        "ovaib_parity", "train", data_dir=tmp_path, config="m3", k=1, num_train=50, num_test=5
    )
    reads = []
    getitems = src.__getitems__
    monkeypatch.setattr(src, "__getitems__", lambda idx: reads.append(len(idx)) or getitems(idx))
    for process_index in range(2):
        kwargs = dict(
            batch_size=8, seed=4, process_index=process_index, process_count=2, prefetch=2
        )
        got, want = both_paths(src, k=7, **kwargs)  # 7 x 16 examples: crosses two epochs
        assert_same_batches(got, want)
    assert reads and set(reads) == {8}  # one batched ArrayRecord read per batch
    # An in-memory copy of the split (the trainer's cache) gives the same batches again.
    cached = data.ArraySource(data.load_arrays(src, chunk=16))
    kwargs = dict(batch_size=16, seed=4, prefetch=0)
    assert_same_batches(
        take(data.make_iterator(cached, **kwargs), 5),
        take(data.make_iterator(src, batched=False, **kwargs), 5),
    )
