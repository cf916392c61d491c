"""Test set-up (must precede the first jax import): 8 fake CPU devices for the sharding
tests, quick compiles (no LLVM optimisation passes; XLA's classic CPU emitters where this
jaxlib has the flag), and one persistent JAX compilation cache for the whole session.

``OVAIB_TEST_REAL_DEVICES=1`` leaves the devices as they are (no fake CPU devices, no
forced CPU platform; float32 matmuls at full precision): benchmarks/accelerator_check.py
runs the sharding tests so on a GPU or TPU host.

The cache: many tests compile the same program again, in another test or in a training
subprocess (a resumed run, a sweep's second seed, a README command). The session's
pytest process makes one fresh cache directory and hands it down through the
environment (``JAX_COMPILATION_CACHE_DIR``, read by jax at import), so xdist workers
and the subprocesses they start share it; it is removed at the end of the session.
Compiled programs are keyed by their HLO, flags and devices, so a hit returns the
program a fresh compile would. jax writes an entry in place (not atomically): one left
half-written by a killed process, or read while another process writes it, fails to
load, and jax warns and compiles afresh (``jax_raise_persistent_cache_errors`` is off),
so a torn entry costs a compile, not a test. ``OVAIB_TEST_COMPILATION_CACHE=0`` turns it off; an
already set ``JAX_COMPILATION_CACHE_DIR`` is used as it is (and kept).
"""

import os
import shutil
import subprocess
import sys
import tempfile

# XLA's CPU fusion emitters (the default) take most of the time of compiling the suite's
# small programs; the classic emitters compile them about twice as fast (tests/losses:
# 165 s against 265 s on 2 cores). XLA's fusion decisions move a little with them
# (compiled temporary memory within 2 % for four objectives at M = 3 and 5, the
# objectives' values within the tests' tolerances). XLA aborts on a flag it does not know,
# so a newer jaxlib that dropped this one is detected in a child process and the flag left
# out. The result is passed down in OVAIB_TEST_XLA_FLAGS (xdist workers inherit it, and
# tests/train_helpers.subprocess_env adds it to the training subprocesses' flags).
_QUICK_COMPILE_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def _xla_accepts(flags: str) -> bool:
    """Whether this jaxlib starts its CPU backend with ``flags`` in XLA_FLAGS."""
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", "import jax; jax.devices()"],
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def _add_xla_flags(flags: str) -> None:
    for flag in flags.split():
        if flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()


if os.environ.get("OVAIB_TEST_REAL_DEVICES", "") in ("", "0"):
    _add_xla_flags("--xla_force_host_platform_device_count=8")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # The suite's programs are small and run briefly: compiling them is most of its time,
    # so LLVM's optimisation passes are skipped (XLA's HLO passes, fusion included, still
    # run). Subprocesses inherit it (tests/train_helpers.subprocess_env sets it too).
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    if "OVAIB_TEST_XLA_FLAGS" not in os.environ:  # the first pytest process only
        accepted = _xla_accepts(_QUICK_COMPILE_FLAGS)
        os.environ["OVAIB_TEST_XLA_FLAGS"] = _QUICK_COMPILE_FLAGS if accepted else ""
    _add_xla_flags(os.environ["OVAIB_TEST_XLA_FLAGS"])
else:
    # The tests compare float32 results to 1e-5-1e-4 (sharded against unsharded, against
    # NumPy references); a GPU's default precision runs float32 matmuls as TF32 (10-bit
    # mantissa) and a TPU's as bfloat16 passes. Full float32, as on a CPU.
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

_OWN_CACHE = None
if os.environ.get("OVAIB_TEST_COMPILATION_CACHE", "1") != "0" and not os.environ.get(
    "JAX_COMPILATION_CACHE_DIR"
):
    # Only the first pytest process gets here (its workers inherit the variable).
    _OWN_CACHE = tempfile.mkdtemp(prefix="ovaib_test_jax_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    # Cache every program, however quick to compile: most of the suite's are small.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
