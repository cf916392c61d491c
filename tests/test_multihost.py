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

import jax
import numpy as np

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
