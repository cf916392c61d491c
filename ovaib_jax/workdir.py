"""The rules of a workdir: one live run at a time, and a rerun that continues the same run.

* :class:`Lock`: an exclusive lock on ``WORKDIR/.lock`` (``fcntl.flock``) held for the whole
  run by process 0. The kernel releases it when the holder exits, however it exits
  (SIGKILL included), so it is never left stuck; a second run on a live workdir stops at
  once with a message naming the holder (pid, host, start time, command).
* :func:`check_resume`: a rerun on a workdir that holds a run must continue that run. Its
  config may differ from the recorded ``config.json`` only in
  :data:`ovaib_jax.configs.RESUMABLE_FIELDS` (what is logged, evaluated and kept, where
  data lives); ``num_train_steps`` may not go below the latest checkpoint, nor change at
  all when the learning-rate schedule decays over it. Anything else stops the rerun
  before it touches the workdir, listing the differing keys.
* :func:`record_start`: the accepted config is recorded (``config.json``) with the sha256
  of the fields that identify the run, and each start is appended to ``run.json``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import sys
import threading
from typing import Any

import jax
import ml_collections

from ovaib_jax import checkpointing, configs, paths, records, state

log = logging.getLogger(__name__)

__all__ = ["Lock", "ResumeError", "WorkdirBusyError", "check_resume", "identity_hash"]

LOCK_FILE = ".lock"
# A bucket workdir's lease not renewed for this long belongs to a stopped run.
LEASE_SECONDS = 120.0
_LEASE_TRIES = 4  # creations of a bucket lease tried, each after a removed or stale one
RUN_FILE = "run.json"
# Schedules whose learning rate at a given step depends on num_train_steps.
DECAYING_SCHEDULES = ("cosine", "warmup_cosine")


class WorkdirBusyError(RuntimeError):
    """Another live process holds the workdir."""


class ResumeError(ValueError):
    """A rerun whose config would make the workdir's records another run's."""


class Lock:
    """The exclusive lock of a workdir (process 0 only; a no-op on other processes).

    Local workdirs: ``fcntl.flock`` on ``WORKDIR/.lock``, released by the kernel when the
    holder exits. Buckets (``gs://``), which have no locks: a lease object
    ``WORKDIR/.lock``, created only where none exists
    (:func:`~ovaib_jax.paths.create_exclusive`: of two runs starting at once exactly one
    creates it), that the holder renews every ``LEASE_SECONDS / 4`` from a background
    thread; a lease older than :data:`LEASE_SECONDS` is stale (its holder was killed) and is
    taken over (removed, then created again). A holder whose renewals failed for that long
    (a network outage, a paused process) may find its lease taken: each renewal first reads
    the lease, and on another run's token stops renewing (it never overwrites that lease)
    and records the new holder in :meth:`lost`. The trainer calls :meth:`check` before every
    checkpoint it writes, which also reads the lease then: a run whose lease is another's at
    that moment writes no checkpoint, whenever its renewals last ran. Release removes the lease
    only while it is this run's. (Left open on a bucket, whose conditional writes this
    client offers for creation only: two runs taking over one stale lease in the same
    fraction of a second, or a renewal racing a take-over, can each write their lease; the
    one whose lease is overwritten stops at its next :meth:`check`.)

    Use as a context manager; :meth:`acquire` raises :class:`WorkdirBusyError` naming the
    holder when another live process holds it.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = paths.join(workdir, LOCK_FILE)
        self._file: Any = None
        self._stop: threading.Event | None = None
        self._token: str | None = None
        self._lost: str | None = None

    def _holder(self) -> str:
        since = datetime.datetime.now().isoformat(timespec="seconds")
        command = " ".join(sys.argv)[:300]
        return f"pid {os.getpid()} on {socket.gethostname()} since {since} ({command})"

    def _busy(self, holder: str, detail: str = "") -> WorkdirBusyError:
        return WorkdirBusyError(
            f"{self.workdir} is in use by {holder}{detail}. Wait for that run to end (or "
            "stop it), or use another --workdir."
        )

    def acquire(self) -> Lock:
        if jax.process_index() != 0:
            return self
        if not paths.is_local(self.workdir):
            return self._acquire_lease()
        import fcntl

        os.makedirs(self.workdir, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise self._busy(holder) from None
        f.seek(0)
        f.truncate()
        f.write(self._holder() + "\n")
        f.flush()
        self._file = f
        return self

    def _acquire_lease(self) -> Lock:
        import time
        import uuid

        token = uuid.uuid4().hex
        lease = {"holder": self._holder(), "token": token}

        def current() -> dict[str, Any]:
            return {**lease, "renewed": time.time()}

        def renew() -> None:
            records.write_json(self.path, current())

        for _ in range(_LEASE_TRIES):
            if paths.create_exclusive(self.path, records.dumps(current()).encode()):
                break
            old = records.read_json(self.path)
            if old is None:  # released since: create it again
                continue
            age = time.time() - float(old.get("renewed", 0))
            if age < LEASE_SECONDS:
                raise self._busy(
                    old.get("holder", "another process"),
                    f" (lease renewed {age:.0f} s ago; a stopped run's lease expires after "
                    f"{LEASE_SECONDS:.0f} s)",
                )
            log.warning(
                "Taking over the workdir lease %s of %s, not renewed for %.0f s.",
                self.path,
                old.get("holder", "another process"),
                age,
            )
            paths.remove(self.path)  # then create it: of two runs taking over, one does
        else:
            now = records.read_json(self.path) or {}
            raise self._busy(now.get("holder", "other runs starting at the same time"))
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(LEASE_SECONDS / 4):
                try:
                    now = records.read_json(self.path)
                    if now is not None and now.get("token") != token:
                        self._lost = str(now.get("holder", "another process"))
                        log.error(
                            "The workdir lease %s was taken over by %s; this run stops at "
                            "its next checkpoint without writing it.",
                            self.path,
                            self._lost,
                        )
                        return
                    renew()
                except Exception as e:  # a transient bucket error: the next try may pass
                    log.warning("Renewing the workdir lease %s failed: %s", self.path, e)

        threading.Thread(target=loop, name="ovaib-lease", daemon=True).start()
        self._stop = stop
        self._token = token
        return self

    def lost(self) -> str | None:
        """The holder that took this run's bucket lease over, or None while this run holds
        it (always None for a local workdir, whose lock the kernel keeps)."""
        return self._lost

    def check(self) -> None:
        """Raises :class:`WorkdirBusyError` when the lease was taken over (:meth:`lost`,
        and for a bucket lease its token read now), so that two runs never write one
        workdir's checkpoints."""
        if self._token is not None and self._lost is None:
            try:
                now = records.read_json(self.path)
            except Exception as e:  # unreadable now: the renewals' verdict stands
                log.warning("Reading the workdir lease %s failed: %s", self.path, e)
            else:
                if now is None or now.get("token") != self._token:
                    self._lost = str((now or {}).get("holder", "nobody (the lease was removed)"))
        holder = self.lost()
        if holder is not None:
            raise WorkdirBusyError(
                f"{self.workdir} was taken over by {holder} after this run's lease "
                f"went unrenewed for {LEASE_SECONDS:.0f} s (bucket unreachable or the "
                "process paused); this run stopped without writing its checkpoint. Its "
                "last checkpoints stay in the workdir; let the new holder finish, or stop "
                "it and rerun."
            )

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
        if self._stop is not None:
            self._stop.set()
            self._stop = None
            held = records.read_json(self.path)
            if held is not None and held.get("token") == self._token:
                paths.remove(self.path)  # never another run's lease

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _fixed(config_json: dict[str, Any]) -> dict[str, Any]:
    flat = configs.flatten(config_json)
    return {k: v for k, v in flat.items() if not configs.is_under(k, configs.RESUMABLE_FIELDS)}


def identity_hash(config: ml_collections.ConfigDict) -> str:
    """sha256 of the fields that identify a run (all but the resumable ones)."""
    fixed = _fixed(json.loads(configs.to_json(config)))
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()


def check_resume(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises :class:`ResumeError` when ``config`` cannot continue the run in ``workdir``.

    Nothing is written: the check runs before the run is built.
    """
    recorded = records.read_config_json(workdir)
    steps = state.saved_steps(workdir)
    moved = sorted(paths.listdir(paths.join(workdir, checkpointing.CORRUPT_DIR)))
    if moved and not steps:
        raise ResumeError(
            f"{workdir} holds no checkpoint, but {checkpointing.CORRUPT_DIR}/ holds {moved}, "
            "moved aside when they failed to restore: a rerun would train again from step 0 "
            f"over this run's records. Move them back into {workdir}/{state.CHECKPOINT_DIR}/ "
            "to retry them (if the cause was elsewhere), or use another --workdir."
        )
    if recorded is None:
        if steps:
            raise ResumeError(
                f"{workdir} holds checkpoints {steps} but no config.json: cannot tell which "
                "config trained them. Restore config.json, or use another --workdir."
            )
        return
    fixed = configs.run_changes(recorded, config)
    if fixed:
        lines = [f"  {k}: {was!r} -> {now!r}" for k, (was, now) in fixed.items()]
        flags = configs.continue_flags(fixed)
        again = f" To continue this run, add {flags}." if flags else ""
        raise ResumeError(
            f"{workdir} holds a run trained with another config; a rerun may change only "
            f"{', '.join(configs.RESUMABLE_FIELDS)}. Differs in:\n"
            + "\n".join(lines)
            + f"\nUse another --workdir for a new run (nothing was changed in this one).{again}"
        )
    total, was = int(config.num_train_steps), int(recorded.get("num_train_steps", 0))
    latest = max(steps) if steps else 0
    if total < latest:
        raise ResumeError(
            f"--config.num_train_steps={total} is below the latest checkpoint of {workdir} "
            f"(step {latest}); its records would mislabel the step-{latest} model. Use "
            f"num_train_steps >= {latest}, or evaluate an earlier checkpoint with "
            f"python -m ovaib_jax.evaluate --workdir={workdir} --step=N."
        )
    if total != was and config.optimizer.schedule in DECAYING_SCHEDULES and latest:
        raise ResumeError(
            f"--config.num_train_steps={total} differs from the run's {was}, and the "
            f"{config.optimizer.schedule!r} schedule decays over num_train_steps: the steps "
            "already taken would have had other learning rates. Use another --workdir."
        )


def record_start(config: ml_collections.ConfigDict, workdir: str, start_step: int) -> None:
    """Records the accepted config (``config.json``) and appends this start to
    ``run.json`` (``{"identity_sha256": ..., "starts": [{"time", "step", "host",
    "changed"}]}``)."""
    recorded = records.read_config_json(workdir)
    changed = configs.changed_keys(recorded, config) if recorded is not None else []
    records.write_config(workdir, configs.to_json(config))
    run = records.read_json(paths.join(workdir, RUN_FILE)) or {"starts": []}
    run["identity_sha256"] = identity_hash(config)
    run["starts"].append(
        {
            "time": datetime.datetime.now().isoformat(timespec="seconds"),
            "step": int(start_step),
            "host": socket.gethostname(),
            "changed": changed,
        }
    )
    if jax.process_index() == 0:
        records.write_json(paths.join(workdir, RUN_FILE), run, indent=2)
