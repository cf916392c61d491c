"""Two processes on localhost (jax.distributed, 2 fake CPU devices each) train exactly
what one process with 4 devices and the same global batch trains.

Each process reads its own slice of every global batch, builds global arrays with
``make_array_from_process_local_data``, and both write one checkpoint directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.train_helpers import TINY, main_cmd, read_model, subprocess_env

RUN = dict(TINY, num_train_steps=6, checkpoint_every_steps=3, log_every_steps=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    from ovaib_jax import data

    data_dir = str(tmp_path / "data")
    data.prepare(
        "ovaib_parity", data_dir=data_dir, config="m3", M=3, k=2, p=1.0, num_train=256, num_test=64
    )
    over = dict(RUN, **{"dataset.data_dir": data_dir})
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    port = _free_port()
    procs = [
        subprocess.Popen(
            main_cmd(
                multi,
                {
                    **over,
                    "distributed.coordinator_address": f"127.0.0.1:{port}",
                    "distributed.num_processes": 2,
                    "distributed.process_id": i,
                },
            ),
            env=subprocess_env(2),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    procs.append(
        subprocess.Popen(
            main_cmd(single, over),
            env=subprocess_env(4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-4000:]

    got, want = read_model(multi, 6), read_model(single, 6)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Each process saved its own iterator position; only process 0 wrote metrics.
    saved = json.load(open(os.path.join(multi, "checkpoints", "6", "data", "metadata")))
    assert saved["process_count"] == 2 and len(saved["states"]) == 2
    lines = [json.loads(x) for x in open(os.path.join(multi, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == [3, 6]
    single_last = json.loads(open(os.path.join(single, "metrics.jsonl")).readlines()[-1])
    np.testing.assert_allclose(lines[-1]["train/loss"], single_last["train/loss"], rtol=1e-5)


# Two processes with one CPU device each: write steps 1 and 2 ("write"), or restore the
# latest with step 2 failing on process 1 alone, after orbax's own collective restore
# ("train": a writable checkpointer, which moves damage aside; "evaluate": read-only), or
# inside it, before the barrier that ends it ("inside", writable).
_RESTORE_SCRIPT = r"""
import json, sys
import jax, numpy as np
port, pid, directory, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ovaib_jax import checkpointing
rep = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P())
ck = checkpointing.Checkpointer(directory, async_save=False, read_only=mode == "evaluate")
if mode == "write":
    for step in (1, 2):
        w = jax.make_array_from_callback((4,), rep, lambda i, s=step: np.full(4, s, np.float32)[i])
        ck.save(step, {"model": {"w": w}})
    ck.close()
    sys.exit(0)
if pid == 1 and mode == "inside":  # fails inside orbax's restore, before its barrier
    inner = ck.manager._checkpointer
    orbax_restore = inner._restore
    def damaged_inside(directory, *args, **kwargs):
        if str(directory).rstrip("/").endswith("/2"):
            raise OSError("damaged on process 1")
        return orbax_restore(directory, *args, **kwargs)
    inner._restore = damaged_inside
elif pid == 1:  # step 2 reads as damaged on this process alone
    restore_step = ck._restore_step
    def damaged(step, abstract, with_data):
        restored = restore_step(step, abstract, with_data)  # (orbax's collectives run)
        if step == 2:
            raise OSError("damaged on process 1")
        return restored
    ck._restore_step = damaged
abstract = {"model": {"w": jax.ShapeDtypeStruct((4,), np.float32, sharding=rep)}}
got = ck.restore(abstract, with_data=False)
w = np.asarray(got.trees["model"]["w"].addressable_data(0))
print(json.dumps({"step": got.step, "w": float(w[0]), "steps": ck.all_steps()}))
"""


def _two_processes(directory: str, mode: str) -> list:
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RESTORE_SCRIPT, str(port), str(i), directory, mode],
            env=subprocess_env(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=60)
            assert p.returncode == 0, stderr[-3000:]
            out.append(json.loads(stdout.strip().splitlines()[-1]) if mode != "write" else None)
    finally:
        for p in procs:
            p.kill()
    return out


@pytest.mark.parametrize("mode", ["train", "evaluate", "inside"])
def test_a_checkpoint_damaged_on_one_process_is_skipped_by_every_process(tmp_path, mode):
    """Every process restores the same step: one that fails on any process is skipped by
    all (and moved aside once, by a writable checkpointer). Each process had decided
    alone: process 0 kept step 2 while process 1 fell back to step 1 and waited forever
    in orbax's restore (a timeout here). "inside": the failure skipped the barrier that
    ends orbax's restore, so process 0 waited in it while process 1 compared verdicts
    (their collectives out of step: a timeout here)."""
    directory = str(tmp_path / "checkpoints")
    _two_processes(directory, "write")
    got = _two_processes(directory, mode)
    assert [(g["step"], g["w"]) for g in got] == [(1, 1.0), (1, 1.0)], got
    left = [1, 2] if mode == "evaluate" else [1]
    assert [g["steps"] for g in got] == [left, left]
    corrupt = tmp_path / "checkpoints_corrupt"
    if mode != "evaluate":
        assert sorted(os.listdir(corrupt)) == ["2"]
    else:
        assert not corrupt.exists()


def test_the_mesh_groups_each_processs_devices_together():
    """global_batch and the evaluation's gathered targets take a global batch's rows in
    process order, which needs each process's devices contiguous along the data axis;
    jax.devices() does not promise that on every topology (ids interleaved by host)."""
    import types

    from ovaib_jax import runtime

    devs = [types.SimpleNamespace(id=i, process_index=i % 2) for i in range(6)]
    assert [(d.process_index, d.id) for d in runtime.by_process(devs)] == [
        (0, 0), (0, 2), (0, 4), (1, 1), (1, 3), (1, 5)
    ]  # fmt: skip
    real = jax.devices()
    assert list(runtime.create_mesh(real[::-1]).devices) == real[::-1]  # one process: as given
