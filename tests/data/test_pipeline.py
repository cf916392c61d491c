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
