"""One command for a host with a GPU or TPU: does everything work there, and how fast?

    python benchmarks/accelerator_check.py            # full run: under 8 minutes on an H200
    python benchmarks/accelerator_check.py --quick    # smoke run at tiny sizes, any CPU (< 1 min)

Sections (all measured side by side in this one process, except the tests):

1. The tests that exercise real devices (sharding across all local devices, multi-device
   equality), run by pytest in a subprocess with ``OVAIB_TEST_REAL_DEVICES=1`` (no fake
   CPU devices, no forced CPU platform: see tests/conftest.py). A test that needs more
   local devices than the host has is skipped (or not selected) and the report says why.
   It runs before this process touches the accelerator (which JAX would preallocate).
2. The loss benchmark (``benchmarks/loss_benchmark.py``'s machinery) at accelerator
   sizes: ova_ib forward+backward, plain and chunked, float32 and bfloat16 ``z``, as a
   ratio to the floor (forward+backward of a row-wise logsumexp of the Gram matrix of all
   M*N embeddings, on the same ``z``), with XLA's compiled temporary memory. A case whose
   compiled memory does not fit in the device's memory is not run.
3. The train step of the paper configs (VFD classification: ResNet-18 on 128x128 RGB and
   depth, 1D-CNN on force; WESAD: 1D-CNNs on 3500-step Resp and ECG, 320-step BVP) on
   synthetic batches of their real shapes, ``config.model.dtype`` bfloat16 and float32:
   steps/s, examples/s and FLOP utilisation (FLOPs of the compiled step from XLA's cost
   analysis / step time / the device's peak from :data:`PEAKS`; an unknown device gets
   the achieved FLOP/s only).
4. The input pipeline of the default config (``benchmarks/train_benchmark.py``'s
   measurement: the step fed by the real pipeline against in-memory batches) and the
   pipeline alone, in examples/s, against what each step of sections 3 and 4 consumes.

Writes ``benchmarks/results/accelerator_<device>_<date>.md`` (``--quick`` adds
``_quick``; ``--out`` changes the folder): device, jax version, date, every table, and
what was skipped and why. Progress lines (stderr) carry the clock time and the seconds
since the start. Time: sections stop starting new work once their share of a soft budget
(``--budget-s``, 420 s) is spent, and say so. Exit status 1 if a section failed to run
or a test failed (the report is written either way). One host only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script from a checkout, without installing
    sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import loss_benchmark as lb  # noqa: E402
from benchmarks import train_benchmark as tb  # noqa: E402

# The tests of section 1 and what they need.
SHARDING_TESTS = "tests/losses/test_sharding.py"  # skips itself with fewer than 8 devices
EQUALITY_TEST = "tests/test_train.py::test_eight_devices_equal_one_device"
EQUALITY_BATCH = 16  # that test's global batch: the device count must divide it

# The paper configs of section 3: label -> experiment file (under experiments/).
PAPER_CONFIGS = {
    "VFD classification": "paper/vfd_classification",
    "WESAD": "paper/wesad",
}
DTYPES = ("bfloat16", "float32")

# Dense peak FLOP/s per device (TFLOP/s), from the vendors' public specifications:
# (device_kind pattern, name, bfloat16 peak, float32 peak, what the float32 peak is).
# float32 on Ampere/Hopper GPUs: XLA's default precision runs float32 matmuls and
# convolutions on TF32 tensor cores, so the TF32 peak is the relevant one (the CUDA-core
# FP32 peak is named in the note). On TPUs the default precision runs float32 matmuls
# as single bfloat16 passes: the bfloat16 peak. JAX devices of TPU v2/v3 are cores.
PEAKS: tuple[tuple[str, str, float, float, str], ...] = (
    (r"h200.*nvl", "NVIDIA H200 NVL", 835.5, 417.5, "TF32 (FP32 CUDA cores: 60.0)"),
    (r"h200", "NVIDIA H200", 989.4, 494.7, "TF32 (FP32 CUDA cores: 66.9)"),
    (r"h100.*pcie", "NVIDIA H100 PCIe", 756.0, 378.0, "TF32 (FP32 CUDA cores: 51.2)"),
    (r"h100.*nvl", "NVIDIA H100 NVL", 835.5, 417.5, "TF32 (FP32 CUDA cores: 60.0)"),
    (r"h100", "NVIDIA H100 SXM", 989.4, 494.7, "TF32 (FP32 CUDA cores: 66.9)"),
    (r"a100", "NVIDIA A100", 312.0, 156.0, "TF32 (FP32 CUDA cores: 19.5)"),
    (r"tpu v6", "TPU v6e (per chip)", 918.0, 918.0, "bfloat16 passes"),
    (r"tpu v5 ?(lite|e)", "TPU v5e (per chip)", 197.0, 197.0, "bfloat16 passes"),
    (r"tpu v5", "TPU v5p (per chip)", 459.0, 459.0, "bfloat16 passes"),
    (r"tpu v4", "TPU v4 (per chip)", 275.0, 275.0, "bfloat16 passes"),
    (r"tpu v3", "TPU v3 (per core)", 61.5, 61.5, "bfloat16 passes"),
    (r"tpu v2", "TPU v2 (per core)", 22.5, 22.5, "bfloat16 passes"),
)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size of a run (full or --quick)."""

    budget_s: float  # soft limit of the whole run; sections stop starting work past theirs
    test_timeout_s: int  # of the pytest subprocess
    loss_m: tuple[int, ...]
    loss_n: tuple[int, ...]
    loss_d: int
    chunk: int
    rounds: int  # timed rounds of sections 2 and 3
    tiny_models: bool  # section 3: tests/train_helpers.TINY model sizes and batch
    train_pairs: tuple[tuple[str, str], ...] | None  # section 3's (config, dtype); None: all
    step_block_s: float  # section 3: seconds of back-to-back steps per timed block
    feed_chunk: int  # section 4: steps per chunk of train_benchmark.time_feeds
    feed_warmup: int
    feed_rounds: int
    supply_batches: int  # section 4: batches per timed block of the pipeline alone
    parity_examples: tuple[int, int] | None  # (num_train, num_test); None: the config's
    fast_compile: bool  # jax_disable_most_optimizations (quick: compile time dominates)


FULL = Sizes(
    budget_s=420.0,
    test_timeout_s=180,
    loss_m=(4, 8),
    loss_n=(4096, 16384),
    loss_d=512,
    chunk=1024,
    rounds=5,
    tiny_models=False,
    train_pairs=None,
    step_block_s=0.5,
    feed_chunk=25,
    feed_warmup=20,
    feed_rounds=20,
    supply_batches=200,
    parity_examples=None,
    fast_compile=False,
)
QUICK = Sizes(
    budget_s=150.0,
    test_timeout_s=120,
    loss_m=(2,),  # one M: the table's loop is the same for every M (suite time)
    loss_n=(256,),
    loss_d=64,
    chunk=64,
    rounds=2,
    tiny_models=True,
    # One dtype per config (both dtypes, both configs covered): compiling is most of it.
    train_pairs=(("VFD classification", "bfloat16"), ("WESAD", "float32")),
    step_block_s=0.05,
    feed_chunk=5,
    feed_warmup=2,
    feed_rounds=2,
    supply_batches=10,
    parity_examples=(512, 256),
    fast_compile=True,
)
# Share of the budget by the end of which each section stops starting new work.
SECTION_END = {1: 0.3, 2: 0.6, 3: 0.85, 4: 1.0}


# --------------------------------------------------------------------------- utilities


class Check:
    """The run's report, clock, sizes, and what was skipped or failed."""

    def __init__(self, sizes: Sizes):
        self.sizes = sizes
        self.rep = lb.Report()
        self.t0 = time.monotonic()
        self.skipped: list[str] = []  # "what: why"
        self.failed: list[str] = []  # sections that raised, tests that failed
        self.demand: dict[str, tuple[float, int]] = {}  # step -> (examples/s, bytes/example)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def progress(self, msg: str) -> None:
        now = datetime.datetime.now().strftime("%H:%M:%S")
        print(f"[{now} +{self.elapsed():6.1f} s] {msg}", file=sys.stderr, flush=True)

    def past(self, section: int) -> bool:
        """Whether ``section``'s share of the time budget is spent."""
        return self.elapsed() > SECTION_END[section] * self.sizes.budget_s

    def skip(self, what: str, why: str) -> None:
        self.skipped.append(f"{what}: {why}")
        self.progress(f"skipped {what}: {why}")


def device_slug() -> str:
    """``jax.devices()[0].device_kind`` lower-cased and slugged (``nvidia-h200``), or the
    platform (``cpu``)."""
    dev = jax.devices()[0]
    kind = str(getattr(dev, "device_kind", "") or dev.platform)
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or dev.platform


def peak_of(kind: str) -> tuple[str, float, float, str] | None:
    """(name, bfloat16 peak, float32 peak, what the float32 peak is) of a device kind, in
    TFLOP/s, or None for a device not in :data:`PEAKS`."""
    for pattern, name, bf16, f32, note in PEAKS:
        if re.search(pattern, kind.lower()):
            return name, bf16, f32, note
    return None


def device_memory() -> int | None:
    """Bytes the first device's allocator may hand out (None where unknown, e.g. CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # not implemented on some backends
        return None
    if not stats:
        return None
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    return int(limit) if limit else None


def flops_of(compiled) -> float | None:
    """FLOPs of one call of a compiled computation (XLA's cost analysis, per device)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return float(flops) if flops and flops > 0 else None


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is XLA running out of device memory (a size that does not fit,
    skipped), not a fault of the computation (a failure)."""
    text = str(err).upper()
    return "RESOURCE_EXHAUSTED" in text or "OUT OF MEMORY" in text


def first_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return text.splitlines()[0][:300]


def gib(b: float | None) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f}"


# --------------------------------------------------------------------------- 1. tests


def _test_env() -> dict[str, str]:
    """This process's environment without fake CPU devices, with the real-devices switch
    of tests/conftest.py."""
    env = dict(os.environ)
    flags = [
        f
        for f in env.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    env["OVAIB_TEST_REAL_DEVICES"] = "1"
    env["PYTHONPATH"] = str(_REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _probe(env: dict[str, str]) -> tuple[int, str]:
    """(local device count, platform) as a fresh process with ``env`` sees them."""
    code = "import jax; print(jax.local_device_count(), jax.devices()[0].platform)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=_REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    count, plat = out.stdout.strip().splitlines()[-1].split()
    return int(count), plat


def _junit(path: Path) -> list[tuple[str, str, str]]:
    """(test id, outcome, message) of every test case of a pytest JUnit XML file."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome, message = "passed", ""
        for tag, result in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                text = (node.get("message") or node.text or "").strip()
                outcome, message = result, (text.splitlines() or [""])[0]
                break
        cases.append((name, outcome, message))
    return cases


def section_tests(chk: Check) -> None:
    rep = chk.rep
    rep.add("## 1. Tests on the real devices")
    rep.add()
    env = _test_env()
    chk.progress("section 1: probing the local devices in a subprocess")
    count, plat = _probe(env)
    targets = [SHARDING_TESTS]
    deselected: list[tuple[str, str]] = []
    if count >= 2 and EQUALITY_BATCH % count == 0:
        targets.append(EQUALITY_TEST)
    else:
        why = (
            f"needs 2 or more local devices dividing its global batch {EQUALITY_BATCH}; "
            f"this host has {count} {plat} device(s)"
        )
        deselected.append((EQUALITY_TEST, why))
        chk.skip(f"test {EQUALITY_TEST}", why)
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
            f"--junitxml={xml}", *targets,
        ]  # fmt: skip
        rep.add(
            f"`OVAIB_TEST_REAL_DEVICES=1 pytest {' '.join(targets)}` in a subprocess "
            f"(no fake CPU devices): {count} local {plat} device(s)."
        )
        rep.add()
        chk.progress(f"section 1: pytest on {count} {plat} device(s): {' '.join(targets)}")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                env=env,
                cwd=_REPO,
                capture_output=True,
                text=True,
                timeout=chk.sizes.test_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            chk.failed.append(f"tests: pytest ran past {chk.sizes.test_timeout_s} s")
            rep.add(f"**pytest ran past {chk.sizes.test_timeout_s} s and was stopped.**")
            rep.add()
            return
        seconds = time.perf_counter() - t0
        cases = _junit(xml) if xml.exists() else []
    lines = [x for x in proc.stdout.strip().splitlines() if x.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    counts = Counter(outcome for _, outcome, _ in cases)
    rows = [[k, counts.get(k, 0)] for k in ("passed", "failed", "error", "skipped")]
    rows.append(["not selected", len(deselected)])
    rep.add(lb.table(["outcome", "tests"], rows))
    rep.add()
    rep.add(f"pytest summary: `{summary}` ({seconds:.1f} s, exit status {proc.returncode}).")
    rep.add()
    reasons = Counter(msg for _, outcome, msg in cases if outcome == "skipped")
    if reasons or deselected:
        rep.add("Skipped or not selected, and why:")
        rep.add()
        for msg, n in reasons.items():
            rep.add(f"* {n} test(s) skipped by pytest: {msg}")
            chk.skipped.append(f"{n} test(s) of section 1: {msg}")
        for test, why in deselected:
            rep.add(f"* `{test}` not selected: {why}")
        rep.add()
    bad = [(name, outcome, msg) for name, outcome, msg in cases if outcome in ("failed", "error")]
    if bad or (proc.returncode not in (0, 5) and not cases):
        rep.add("**Failures:**")
        rep.add()
        for name, outcome, msg in bad:
            rep.add(f"* {outcome}: `{name}`: {msg}")
            chk.failed.append(f"test {name} {outcome}")
        if not cases:
            rep.add("```\n" + (proc.stdout + proc.stderr)[-3000:] + "\n```")
            chk.failed.append(f"tests: pytest exit status {proc.returncode}")
        rep.add()


# --------------------------------------------------------------------------- 2. loss


def section_loss(chk: Check, objectives: tuple[str, ...]) -> None:
    rep, s = chk.rep, chk.sizes
    d = s.loss_d
    rep.add(f"## 2. Loss forward+backward at accelerator sizes (d={d})")
    rep.add()
    rep.add(
        "`benchmarks/loss_benchmark.py`'s machinery: each case jitted (`value_and_grad`, aux "
        f"returned), timed against the floor on the same `z` in {s.rounds} interleaved "
        "rounds (steady state); '/ floor' is the median of the per-round ratios, 'ms' the "
        "case's median time. Floor: forward+backward of `mean(logsumexp(Z @ Z.T, axis=1))` "
        "with Z the M*N x d matrix of all embeddings, in z's dtype. The objectives compute "
        "in float32 whatever z's dtype (bfloat16 z is upcast on entry). Memory: XLA's "
        "compiled temporary bytes of the forward+backward (`memory_analysis()`). "
        f"Chunked: `chunk_size={s.chunk}`. Tau = {lb.TAU}."
    )
    rep.add()
    limit = device_memory()
    if limit is not None:
        rep.add(
            f"Device memory available to XLA: {gib(limit)} GiB; a case needing more is not run."
        )
        rep.add()
    groups = [(m, n) for n in s.loss_n for m in s.loss_m]
    rows: list[list[object]] = []
    for m, n in groups:
        if chk.past(2):
            chk.skip(f"loss sizes M={m}, N={n}", "past section 2's share of the time budget")
            continue
        chk.progress(f"section 2: M={m}, N={n}, d={d}: compiling (memory analysis)")
        # (label, fn, dtype) of every computation of this group; label[-1] == 'floor'
        # for the floors.
        specs = []
        for dtype in DTYPES:
            specs.append(((dtype, "floor"), lb.floor_fwd_bwd(), dtype))
            for name in objectives:
                if lb.supported_m(name, m, n, d) != m:
                    chk.skip(f"{name} at M={m}", "the objective does not take this M")
                    continue
                kw = lb.objective_kwargs(name)
                specs.append(((dtype, name, "plain"), lb.objective_fwd_bwd(name, **kw), dtype))
                chunked = lb.objective_fwd_bwd(name, chunk_size=s.chunk, **kw)
                specs.append(((dtype, name, f"chunk={s.chunk}"), chunked, dtype))
        workers = max(1, min(len(specs), os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = {
                label: pool.submit(lb.temp_bytes, fn, (m, n, d), jnp.dtype(dtype))
                for label, fn, dtype in specs
            }
            mem: dict[tuple, int | None] = {}
            unfit: dict[tuple, str] = {}  # label -> why it is not run
            for label, f in futures.items():
                try:
                    mem[label] = f.result()
                except Exception as err:
                    mem[label] = None
                    unfit[label] = f"compiling failed: {first_line(err)}"
                    if not out_of_memory(err):  # a fault of the objective, not of the size
                        chk.failed.append(f"compiling {label} at M={m}, N={n}: {first_line(err)}")
        z_bytes = m * n * d * 4
        for label, b in mem.items():
            if label not in unfit and limit is not None and (b or 0) + 4 * z_bytes > 0.9 * limit:
                unfit[label] = (
                    f"needs {lb.mib(b)} MiB of temporaries, {lb.mib(limit)} MiB available"
                )
            if label[-1] == "floor" and label in unfit:
                chk.skip(f"floor M={m} N={n} {label[0]} (ratios n/a)", unfit[label])
        fits = {label: label not in unfit for label in mem}
        res = {}
        for dtype in DTYPES:  # timed per dtype: running out of memory loses one dtype's cases
            z = lb.make_z(m, n, d, dtype=jnp.dtype(dtype))
            floor = lb.block(lb.floor_fwd_bwd(), z)
            cases = {}
            for label, fn, dt in specs:
                if dt != dtype or label[-1] == "floor" or not fits[label]:
                    continue
                case = lb.block(fn, z)
                # With no floor that fits, a case is timed against itself: time only.
                cases[label] = (case, floor if fits[(dtype, "floor")] else lb.block(fn, z))
            if not cases:
                continue
            chk.progress(f"section 2: M={m}, N={n}, {dtype}: timing {len(cases)} case(s)")
            try:
                res.update(lb.time_paired(cases, s.rounds))
            except Exception as err:  # e.g. out of memory at run time
                chk.failed.append(f"loss M={m}, N={n}, {dtype}: {first_line(err)}")
                chk.progress(f"section 2: M={m}, N={n}, {dtype} failed: {first_line(err)}")
            del z, floor, cases
        for label, _, dtype in specs:
            if label[-1] == "floor":
                continue
            floor_label = (dtype, "floor")
            _, name, form = label
            if not fits[label]:
                chk.skip(f"{name} {form} M={m} N={n} {dtype}", unfit[label])
                rows.append(
                    [name, m, n, dtype, form, "not run", unfit[label], lb.mib(mem[label]), ""]
                )
                continue
            t = res.get(label)
            if t is None:
                rows.append([name, m, n, dtype, form, "failed", "", lb.mib(mem[label]), ""])
                continue
            if fits[floor_label]:
                ratio: object = f"{t.ratio:.2f}"
            else:
                ratio = "n/a (floor not run)"
            rows.append(
                [
                    name, m, n, dtype, form, f"{1000 * t.time:.2f}", ratio,
                    lb.mib(mem[label]), lb.mib(mem[floor_label]),
                ]
            )  # fmt: skip
    header = ["objective", "M", "N", "z dtype", "form", "ms", "/ floor", "temp MiB"]
    rep.add(lb.table([*header, "floor temp MiB"], rows))
    rep.add()


# --------------------------------------------------------------------------- 3. train step


def _paper_run(experiment: str, dtype: str, tiny: bool):
    """(run, one global synthetic batch, bytes per example) of a paper config."""
    from ovaib_jax import configs, runtime, train
    from tests.train_helpers import TINY, apply_overrides, synthetic_batch

    config = configs.load_experiment(str(_REPO / "experiments" / f"{experiment}.py"))
    config.model.dtype = dtype
    if tiny:
        keep = {k: v for k, v in TINY.items() if k.startswith("model.") or k == "batch_size"}
        apply_overrides(config, {**keep, "model.resnet18.stage_sizes": (1,)})
    run = train.build(config, with_data=False)
    local_rows = config.batch_size // jax.process_count()
    local = synthetic_batch(run.resolved.modalities, local_rows)
    per_example = sum(int(x[0].nbytes) for x in local.values())
    return run, runtime.global_batch(local, run.mesh), per_example


def section_train(chk: Check) -> None:
    rep, s = chk.rep, chk.sizes
    rep.add("## 3. Train step of the paper configs (synthetic batches of their real shapes)")
    rep.add()
    kind = str(jax.devices()[0].device_kind)
    peak = peak_of(kind)
    rep.add(
        "`ovaib_jax.train.build(config, with_data=False)` of each paper config with "
        "`config.model.dtype` set (the objective stays float32: `model.objective_dtype`), "
        "one synthetic batch (tests/train_helpers.synthetic_batch) already on the devices, "
        "the jitted step called back to back (state donated, metrics not fetched). "
        f"steps/s: median over {s.rounds} rounds of blocks of ~{s.step_block_s:g} s, the "
        "configs and dtypes interleaved. FLOPs: XLA's cost analysis of the compiled step "
        "(`jit(step).lower(...).compile().cost_analysis()`: forward, backward, optimizer; "
        "per device). MFU: achieved FLOP/s / the device's dense peak."
    )
    if s.tiny_models:
        rep.add(
            "**--quick: tiny models and batch (tests/train_helpers.TINY), real input "
            "shapes; the numbers mean nothing.**"
        )
    rep.add()
    if peak is None:
        rep.add(f"Device `{kind}` is not in the table of peaks: achieved FLOP/s only.")
        chk.skipped.append(f"MFU of section 3: device `{kind}` has no known peak FLOP/s")
    else:
        name, bf16, f32, note = peak
        rep.add(
            f"Peak of `{kind}` ({name}): bfloat16 {bf16:g} TFLOP/s, float32 {f32:g} TFLOP/s "
            f"({note}) dense; matmul precision `{jax.config.jax_default_matmul_precision}` "
            "(None: the backend's default)."
        )
    rep.add()
    entries = {}
    for label, experiment in PAPER_CONFIGS.items():
        for dtype in DTYPES:
            if s.train_pairs is not None and (label, dtype) not in s.train_pairs:
                chk.skip(f"train step {label} {dtype}", "--quick runs one dtype per config")
                continue
            if chk.past(3):
                chk.skip(f"train step {label} {dtype}", "past section 3's share of the budget")
                continue
            chk.progress(f"section 3: building {label} ({experiment}), {dtype}")
            entries[(label, dtype)] = _paper_run(experiment, dtype, s.tiny_models)
    if not entries:
        return
    chk.progress(f"section 3: compiling {len(entries)} train step(s) in parallel")

    def compile_step(entry):
        run, batch, _ = entry
        return run.train_step.lower(run.state, batch).compile()

    with concurrent.futures.ThreadPoolExecutor(len(entries)) as pool:
        compiled = dict(zip(entries, pool.map(compile_step, entries.values())))
    states = {k: e[0].state for k, e in entries.items()}

    def steps(key, count: int) -> float:
        batch = entries[key][1]
        state = states[key]
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for _ in range(count):
            state, metrics = compiled[key](state, batch)
        jax.block_until_ready((state, metrics))
        states[key] = state
        return (time.perf_counter() - t0) / count

    chk.progress("section 3: warm-up and calibration")
    per_block = {}
    for key in entries:
        steps(key, 2)
        per_block[key] = max(1, min(500, round(s.step_block_s / max(steps(key, 1), 1e-6))))
    times: dict[tuple[str, str], list[float]] = {k: [] for k in entries}
    keys = list(entries)
    for r in range(s.rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            times[key].append(steps(key, per_block[key]))
    chk.progress("section 3: timed")
    rows = []
    for (label, dtype), entry in entries.items():
        run, _, per_example = entry
        t = statistics.median(times[(label, dtype)])
        bs = run.config.batch_size
        flops = flops_of(compiled[(label, dtype)])
        achieved = None if flops is None else flops / t
        mfu = "n/a"
        peak_tf = "n/a"
        if peak is not None and achieved is not None:
            p = peak[1] if dtype == "bfloat16" else peak[2]
            peak_tf = f"{p:g}"
            mfu = f"{100 * achieved / (p * 1e12):.2f}"
        chk.demand[f"{label}, {dtype}"] = (bs / t, per_example)
        rows.append(
            [
                label, dtype, bs, f"{1 / t:.2f}", f"{bs / t:.1f}", f"{1000 * t:.3f}",
                "n/a" if flops is None else f"{flops / 1e9:.3f}",
                "n/a" if achieved is None else f"{achieved / 1e12:.4f}",
                peak_tf, mfu,
            ]
        )  # fmt: skip
        if flops is None:
            chk.skipped.append(f"FLOPs of {label} {dtype}: XLA gave no cost analysis")
    header = ["config", "model dtype", "batch", "steps/s", "examples/s", "ms/step"]
    header += ["GFLOP/step", "achieved TFLOP/s", "peak TFLOP/s", "MFU %"]
    rep.add(lb.table(header, rows))
    rep.add()
    described = set()
    for (label, _), entry in entries.items():
        if label in described:
            continue
        described.add(label)
        run = entry[0]
        shapes = ", ".join(
            f"{m.name} {m.shape} {m.dtype} ({e})"
            for m, e in zip(run.resolved.modalities, run.resolved.encoders)
        )
        rep.add(f"* {label}: {shapes}; {entry[2]} bytes per example.")
    rep.add()


# --------------------------------------------------------------------------- 4. pipeline


def _supply(run, batches_per_block: int, rounds: int) -> float:
    """Examples/s the real pipeline delivers alone: global device batches of
    ``run.train_iter`` (with the config's ``device_prefetch``), no step."""
    from ovaib_jax import inputs

    ahead = int(run.config.dataset.device_prefetch)
    it = inputs.device_batches(run.train_iter, run.mesh, run.modality_names, ahead)
    try:
        jax.block_until_ready([next(it) for _ in range(max(ahead, 1) + 1)])  # warm-up
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(batches_per_block):
                b = next(it)
            jax.block_until_ready(b)
            rates.append(batches_per_block * run.config.batch_size / (time.perf_counter() - t0))
    finally:
        it.close()
    return statistics.median(rates)


def section_pipeline(chk: Check, data_dir: str) -> None:
    from ovaib_jax import configs, train

    rep, s = chk.rep, chk.sizes
    rep.add("## 4. Input pipeline against the step's demand (default config)")
    rep.add()
    if chk.past(4):
        chk.skip("section 4", "the time budget is spent")
        return
    config = configs.load_experiment(str(_REPO / "experiments" / "default.py"))
    config.dataset.data_dir = data_dir
    if s.parity_examples is not None:
        config.dataset.config.num_train, config.dataset.config.num_test = s.parity_examples
    chk.progress(f"section 4: building the default config's data and run (data_dir {data_dir})")
    run = train.build(config, with_data=True)
    bs = config.batch_size
    per_example = sum(
        int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize for m in run.resolved.modalities
    )
    chk.progress("section 4: step fed by the real pipeline vs in-memory batches")
    times = tb.time_feeds(run, s.feed_chunk, s.feed_warmup, s.feed_rounds)
    chk.progress("section 4: the pipeline alone")
    supply = _supply(run, s.supply_batches, max(3, s.feed_rounds // 4))
    pipe = statistics.median(times["real pipeline"]) / s.feed_chunk
    mem = statistics.median(times["in-memory batches"]) / s.feed_chunk
    ratios = [m / p for m, p in zip(times["in-memory batches"], times["real pipeline"])]
    ratio = statistics.median(ratios)
    rep.add(
        f"Config: {config.dataset.name} (M = {len(run.modality_names)}, {per_example} bytes "
        f"per example), objective {config.objective.name}, global batch {bs}, "
        f"device_prefetch {config.dataset.device_prefetch}, cache_max_mb "
        f"{config.dataset.cache_max_mb}. `benchmarks/train_benchmark.py`'s measurement "
        f"(`time_feeds`): {s.feed_rounds} chunks of {s.feed_chunk} steps per feed, the feeds "
        "alternating by chunk; medians. The pipeline alone: global device batches of the "
        f"same iterator, no step, blocks of {s.supply_batches} batches."
    )
    rep.add()
    rows = [
        ["step fed by the real pipeline", f"{1 / pipe:.1f}", f"{bs / pipe:.0f}"],
        ["step fed by in-memory batches (the step's demand)", f"{1 / mem:.1f}", f"{bs / mem:.0f}"],
        ["the pipeline alone (its supply)", f"{supply / bs:.1f}", f"{supply:.0f}"],
    ]
    rep.add(lb.table(["measurement", "batches/s", "examples/s"], rows))
    rep.add()
    rep.add(
        f"* pipeline-fed / in-memory throughput: **{ratio:.3f}** (target >= 0.9; median over "
        "pairs of adjacent chunks)"
    )
    rep.add(f"* supply / demand of this step: **{supply / (bs / mem):.2f}** (>= 1: it keeps up)")
    rep.add()
    if chk.demand:
        rep.add(
            "Supply of this pipeline against the demand of section 3's steps (its records "
            f"are {per_example} bytes; the paper's are larger, so this bounds the "
            "pipeline's per-example overhead, not the decoding of their records):"
        )
        rep.add()
        rows = []
        for label, (demand, bytes_per) in chk.demand.items():
            rows.append(
                [
                    label,
                    f"{demand:.1f}",
                    f"{demand * bytes_per / 2**20:.1f}",
                    f"{supply / demand:.2f}",
                ]
            )
        rep.add(lb.table(["step", "demand examples/s", "demand MiB/s", "supply / demand"], rows))
        rep.add()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes on any CPU (< 1 min)")
    parser.add_argument(
        "--out",
        type=Path,
        default=_REPO / "benchmarks" / "results",
        help="folder of the report (default benchmarks/results)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where section 4 builds the default config's data (default: a temporary "
        "folder with --quick, else the config's: $OVAIB_DATA_DIR or ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--objectives",
        default="ova_ib",
        help="comma-separated objectives of section 2 (default ova_ib)",
    )
    parser.add_argument("--budget-s", type=float, default=None, help="soft time budget (s)")
    parser.add_argument("--sections", default="1,2,3,4", help="comma-separated sections to run")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.budget_s is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    sections = {int(x) for x in args.sections.split(",") if x.strip()}
    objectives = tuple(x.strip() for x in args.objectives.split(",") if x.strip())
    chk = Check(sizes)
    started = datetime.datetime.now()
    cli_args = sys.argv[1:] if argv is None else argv
    cli = " ".join(["python benchmarks/accelerator_check.py", *cli_args])
    if sizes.fast_compile:
        jax.config.update("jax_disable_most_optimizations", True)
    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or (tmp.name if args.quick else "")
    runners = {
        # Section 1 first: its pytest subprocess must have the accelerator to itself (this
        # process has not touched it yet; JAX preallocates most of a GPU's memory).
        1: lambda: section_tests(chk),
        2: lambda: section_loss(chk, objectives),
        3: lambda: section_train(chk),
        4: lambda: section_pipeline(chk, data_dir),
    }
    for number in sorted(sections & runners.keys()):
        start = len(chk.rep.parts)
        try:
            runners[number]()
        except Exception as err:  # the report is written whatever fails
            traceback.print_exc()
            chk.failed.append(f"section {number}: {first_line(err)}")
            chk.rep.add(f"**Section {number} failed:** `{first_line(err)}`")
            chk.rep.add()
        chk.progress(f"section {number} done ({len(chk.rep.parts) - start} report lines)")
    tmp.cleanup()

    today = started.date().isoformat()
    slug = device_slug()
    dev = jax.devices()[0]
    try:
        jaxlib = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        jaxlib = "?"
    rep = lb.Report()  # the header, printed last; then the sections
    rep.add(f"# Accelerator check, {today}, {slug}{' (--quick)' if args.quick else ''}")
    rep.add()
    rep.add(
        f"Device `{dev.device_kind}` ({dev.platform}), {jax.local_device_count()} local "
        f"device(s), {jax.device_count()} in all; jax {jax.__version__}, jaxlib {jaxlib}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU core(s); started "
        f"{started:%Y-%m-%d %H:%M:%S}, {chk.elapsed():.0f} s in all. Command: `{cli}`."
    )
    if args.quick:
        rep.add(
            "**--quick: a smoke run at tiny sizes with most XLA optimisations off; its "
            "numbers mean nothing.**"
        )
    rep.add()
    verdict = "none" if not chk.failed else "; ".join(chk.failed)
    rep.add(f"Failures: {verdict}.")
    rep.add()
    rep.parts += chk.rep.parts
    rep.add("## Skipped, and why")
    rep.add()
    for n in sorted({1, 2, 3, 4} - sections):
        chk.skipped.append(f"section {n}: not asked for (--sections)")
    rep.add("\n".join(f"* {x}" for x in chk.skipped) if chk.skipped else "Nothing.")
    rep.add()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"accelerator_{slug}_{today}{'_quick' if args.quick else ''}.md"
    path.write_text(rep.text())
    print(f"Wrote {path} ({chk.elapsed():.0f} s)", flush=True)
    return 1 if chk.failed else 0


if __name__ == "__main__":
    sys.exit(main())
