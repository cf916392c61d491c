"""Speed and memory of every objective in ``ovaib_jax.losses``, as ratios.

Every time reported is a ratio of two things measured side by side in this process:
each case is jitted, warmed up, then timed in rounds (cases interleaved within a round,
the reference re-timed next to each case, each timing the median of a block of
back-to-back calls after an untimed one: steady state, as inside a training loop); the
reported ratio is the median over rounds of the per-round ratios. Compiled temporary
memory comes from XLA's memory analysis of the compiled forward+backward (nothing is
executed).

Sections (SPEC section 1, "Efficient forms"):

1. Ratio to the floor: forward+backward of each registered objective divided by that of a
   trivial loss on the Gram matrix ``K = Z Z^T`` of all M*N embeddings (mean row-wise
   logsumexp), plain and chunked. Target for ``ova_ib``: <= 1.3. Then the M sweep:
   ``ova_ib`` / floor at every M from 2 to 8 (target <= 1.0, <= 0.9 at M = 4), next to the
   implementation it replaced (``_ova_ib_before``, kept here for that comparison). Then
   where ova_ib's time goes (sub-parts, same floor).
2. ``ova_ib`` against the literal pair-by-pair form of the paper's eq. 11 (one regularised
   solve per (sample, candidate) pair). Target: >= 20x faster.
3. Compiled temporary memory of forward+backward, plain against chunked.
4. Scaling of ``ova_ib`` in N, M and d.
5. (``--symile-reference``) ``symile`` against the reference PyTorch ``symile`` package.

Usage::

    python benchmarks/loss_benchmark.py            # full run (minutes on 2 CPU cores)
    python benchmarks/loss_benchmark.py --quick    # smoke run (< 60 s)

The tables are printed and written to
``benchmarks/results/loss_benchmark_<date>_<device>.md`` (``--out`` changes the folder).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import functools
import importlib.metadata
import importlib.util
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # run as a script from a checkout, without installing
    sys.path.insert(0, str(_REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from ovaib_jax import losses  # noqa: E402
from ovaib_jax.losses import _core, ova  # noqa: E402
from ovaib_jax.losses._basis import (  # noqa: E402
    gram_schmidt_with_coefficients,
    projected_sq_norm,
    span_basis,
)
from ovaib_jax.losses._core import l2_normalize, safe_sqrt  # noqa: E402
from ovaib_jax.losses.ova import remaining  # noqa: E402

RATIO_TARGET = 1.3  # ova_ib forward+backward / floor, N=1024, M=4, d=256
SWEEP_TARGET = 1.0  # ova_ib / floor at every M of the sweep (issue 15)
SWEEP_STRETCH = (4, 0.9)  # (M, ratio): the stretch target of the sweep
SPEEDUP_TARGET = 20.0  # literal eq. 11 / ova_ib, N=128, M=4, d=256
TAU = 0.01
NOISE = 2.0  # z[m] = shared + NOISE * noise: a loss well away from 0 and from log N
CHUNK = 256


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the benchmark uses (full run or --quick)."""

    rounds: int  # timed rounds of sections 1, 2 and 5
    scale_rounds: int  # of section 4
    ratio: tuple[int, int, int]  # (M, N, d) of section 1
    chunk: int
    literal: tuple[int, int, int]
    memory_n: tuple[int, ...]
    memory_other_n: tuple[int, ...]
    memory_md: tuple[int, int]  # (M, d) of section 3
    scale_n: tuple[int, ...]
    scale_m: tuple[int, ...]
    scale_d: tuple[int, ...]
    scale_base: tuple[int, int, int]  # (M, N, d) held fixed while one varies
    symile: tuple[int, int, int]
    breakdown: bool = True  # section 1's sub-part timing of ova_ib
    sweep_m: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)  # section 1's M sweep (N, d of `ratio`)
    chunk_all: bool = True  # chunked column for every objective (else ova_ib only)
    fast_compile: bool = False  # XLA backend optimisation level 0 (quick: compile time)


FULL = Sizes(
    rounds=7,
    scale_rounds=3,
    ratio=(4, 1024, 256),
    chunk=CHUNK,
    literal=(4, 128, 256),
    memory_n=(256, 1024, 4096, 16384),
    memory_other_n=(1024, 4096),
    memory_md=(4, 256),
    scale_n=(256, 512, 1024, 2048),
    scale_m=(2, 3, 4, 6, 8),
    scale_d=(64, 128, 256, 512),
    scale_base=(4, 1024, 256),
    symile=(3, 128, 256),
)
# A smoke run: every code path at tiny sizes, compiled fast; its ratios mean nothing.
QUICK = Sizes(
    rounds=2,
    scale_rounds=2,
    ratio=(3, 32, 16),
    chunk=16,
    literal=(3, 8, 16),
    memory_n=(32, 64),
    memory_other_n=(),
    memory_md=(3, 16),
    scale_n=(32, 64),
    scale_m=(2, 3),
    scale_d=(16, 32),
    scale_base=(3, 32, 16),
    symile=(3, 8, 16),
    breakdown=False,
    sweep_m=(2, 3),
    chunk_all=False,
    fast_compile=True,
)


# --------------------------------------------------------------------------- utilities


def make_z(m: int, n: int, d: int, seed: int = 0, dtype=jnp.float32) -> jax.Array:
    """(M, N, d) embeddings with a shared per-sample signal plus noise (drawn in float32,
    then cast to ``dtype``)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    shared = jax.random.normal(k1, (1, n, d), jnp.float32)
    return (shared + NOISE * jax.random.normal(k2, (m, n, d), jnp.float32)).astype(dtype)


def floor_loss(z: jax.Array) -> jax.Array:
    """The floor: mean row-wise logsumexp of the Gram matrix of all M*N embeddings."""
    flat = z.reshape(-1, z.shape[-1])
    return jnp.mean(jax.nn.logsumexp(flat @ flat.T, axis=1))


def fwd_bwd(loss_fn: Callable, *, has_aux: bool = False) -> Callable:
    """``jit(value_and_grad(loss_fn))``."""
    return jax.jit(jax.value_and_grad(loss_fn, has_aux=has_aux))


def stacked_floor_loss(z: jax.Array, bases: jax.Array) -> jax.Array:
    """The floor of every stacked-bases form: the floor's row-wise logsumexp over each
    modality's products with its own M-1 basis vectors of every candidate, with nothing
    else (no Gram-Schmidt, no square roots).

    Args:
      z: (M, N, d) queries.
      bases: (M, (M-1) N, d) any vectors of the bases' shape (random: only time counts).
    """
    return sum(jnp.mean(jax.nn.logsumexp(z[m] @ bases[m].T, axis=1)) for m in range(z.shape[0]))


@functools.cache
def floor_fwd_bwd() -> Callable:
    """The floor's forward+backward (one jitted function: each shape compiles once)."""
    return fwd_bwd(floor_loss)


@functools.cache
def _objective_fwd_bwd(name: str, aux: bool, kwargs: tuple) -> Callable:
    fn = losses.get(name)
    kw = dict(kwargs)
    if aux:
        return fwd_bwd(lambda z: fn(z, **kw), has_aux=True)
    return fwd_bwd(lambda z: fn(z, **kw)[0])


def objective_fwd_bwd(name: str, *, aux: bool = True, **kwargs) -> Callable:
    """Forward+backward of a registered objective; with ``aux`` its diagnostics are
    returned too (as a training step that logs them does). One jitted function per
    (name, aux, kwargs), so that a shape seen before is not compiled again."""
    return _objective_fwd_bwd(name, aux, tuple(sorted(kwargs.items())))


def objective_kwargs(name: str) -> dict:
    """Paper hyper-parameters where an objective has a temperature (tau = 0.01)."""
    if name == "symile":
        return {"logit_scale": 1.0 / TAU}
    return {"tau": TAU}


def supported_m(name: str, m: int, n: int, d: int) -> int | None:
    """``m`` if the objective accepts M = m modalities, else the largest M <= m it does
    (TRIANGLE is defined for M = 3 only); None if none."""
    fn = losses.get(name)
    for mm in dict.fromkeys((m, 3, 2)):
        if mm > m:
            continue
        try:
            jax.eval_shape(lambda z, fn=fn: fn(z)[0], jax.ShapeDtypeStruct((mm, n, d), jnp.float32))
        except ValueError:
            continue
        return mm
    return None


class Thunk:
    """Runs ``fn(*args)`` to completion when called; ``compile()`` compiles it ahead."""

    def __init__(self, fn: Callable, *args):
        self.fn, self.args = fn, args
        self.hlo_text: str | None = None  # the optimised program, once compiled

    def __call__(self) -> object:
        return jax.block_until_ready(self.fn(*self.args))

    def compile(self) -> None:
        if hasattr(self.fn, "lower"):
            # Fills the jit cache used by __call__; keeps the program for matmul_macs.
            self.hlo_text = self.fn.lower(*self.args).compile().as_text()

    def macs(self) -> int:
        """:func:`matmul_macs` of the compiled program (compiled here if not yet)."""
        if self.hlo_text is None:
            self.compile()
        return matmul_macs(self.hlo_text)


def block(fn: Callable, *args) -> Thunk:
    """A thunk that runs ``fn(*args)`` to completion."""
    return Thunk(fn, *args)


def precompile(thunks: list) -> None:
    """Compiles jitted thunks in parallel threads (XLA compiles without the GIL)."""
    todo = list({id(t): t for t in thunks if isinstance(t, Thunk)}.values())
    workers = max(1, min(len(todo), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for f in [pool.submit(t.compile) for t in todo]:
            f.result()


@dataclasses.dataclass
class Timing:
    ratio: float  # median over rounds of t(case) / t(reference), paired in each round
    time: float  # median t(case), only ever used divided by another median of this run
    ref_time: float
    ratios: tuple[float, ...] = ()  # the per-round ratios, in round order


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free interval for the median of ``values`` (independent rounds):
    the order statistics ``(x_(k), x_(n+1-k))`` with the largest k whose coverage
    ``1 - 2 P(Binomial(n, 1/2) <= k - 1)`` is still >= ``level`` (k = 1, min and max,
    when no k reaches it; n = 7 gives min-max at 98.4 %, n = 9 the 2nd and 8th at 96.1 %).

    Returns:
      ``(low, high, coverage)``.
    """
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("median_interval: no values.")

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return x[k - 1], x[n - k], coverage(k)


def target_verdict(
    ratio: float,
    low: float,
    high: float,
    target: float,
    coverage: float = 1.0,
    level: float = 0.95,
) -> str:
    """``"<= T: PASS"`` when the median's whole interval is at or below the target T,
    ``MISS`` when it is all above, and ``cannot tell`` when it straddles T (the median
    named: the rounds do not decide), or when the interval's ``coverage`` is below
    ``level`` (too few rounds: 5 or fewer give min-max at 94 % or less)."""
    side = "below" if ratio <= target else "above"
    if coverage < level:
        return (
            f"<= {target:g}: cannot tell (median {side}; too few rounds for a "
            f"{100 * level:g} % interval)"
        )
    if high <= target:
        return f"<= {target:g}: PASS"
    if low > target:
        return f"<= {target:g}: MISS"
    return f"<= {target:g}: cannot tell (median {side}, interval covers {target:g})"


# A call shorter than this gets one untimed call right before each timed block: the first
# call after a different computation (or any pause) was measured up to 2x slower than
# back-to-back calls on a shared 2-core machine (thread wake-up, caches), which would
# bias the ratios of small computations against whichever runs after a large one.
STEADY_BELOW_S = 0.2
# Timed calls per block: enough back-to-back calls for about this many seconds.
BLOCK_S = 0.1


def _block_time(thunk: Callable[[], object], calls: int, settle: bool) -> float:
    """Median time of ``calls`` back-to-back calls (after an untimed one if ``settle``)."""
    if settle:
        thunk()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        thunk()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_paired(
    cases: dict[str, tuple[Callable[[], object], Callable[[], object]]],
    rounds: int,
    warmup: int = 2,
) -> dict[str, Timing]:
    """Times every case against its reference, interleaved, in steady state.

    Args:
      cases: label -> (case thunk, reference thunk). References may be shared.
      rounds: timed rounds; in each, every case is timed right after its reference (the
        order of cases alternates between rounds). Each timing is the median of a block
        of back-to-back calls (about ``BLOCK_S`` seconds, at least one call), preceded
        by an untimed call when a call is shorter than ``STEADY_BELOW_S``.

    Returns:
      label -> Timing (the median of the per-round ratios, and median times that are only
      ever reported relative to each other).
    """
    thunks = list({id(t): t for pair in cases.values() for t in pair}.values())
    precompile(thunks)
    calls: dict[int, int] = {}
    settle: dict[int, bool] = {}
    for t in thunks:
        for _ in range(warmup - 1):
            t()
        t0 = time.perf_counter()
        t()
        dt = time.perf_counter() - t0
        calls[id(t)] = max(1, min(20, round(BLOCK_S / max(dt, 1e-6))))
        settle[id(t)] = dt < STEADY_BELOW_S
    t_case: dict[str, list[float]] = {k: [] for k in cases}
    t_ref: dict[str, list[float]] = {k: [] for k in cases}
    labels = list(cases)
    for r in range(rounds):
        for label in labels if r % 2 == 0 else labels[::-1]:
            case, ref = cases[label]
            t_ref[label].append(_block_time(ref, calls[id(ref)], settle[id(ref)]))
            t_case[label].append(_block_time(case, calls[id(case)], settle[id(case)]))
    ratios = {k: tuple(c / f for c, f in zip(t_case[k], t_ref[k])) for k in cases}
    return {
        k: Timing(
            ratio=statistics.median(ratios[k]),
            time=statistics.median(t_case[k]),
            ref_time=statistics.median(t_ref[k]),
            ratios=ratios[k],
        )
        for k in cases
    }


def temp_bytes(fn: Callable, shape: tuple[int, ...], dtype=jnp.float32) -> int | None:
    """Temporary memory XLA allocates for the compiled ``fn`` (no execution)."""
    compiled = fn.lower(jax.ShapeDtypeStruct(shape, dtype)).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes)


# One array shape of HLO text: "f32[2,3]{1,0}" (the layout optional).
_HLO_SHAPE = r"\w+\[[\d,]*\](?:\{[^}]*\})?"
# One HLO instruction: "%name = SHAPE op(operands...), attributes", SHAPE an array shape or
# a tuple of them ("(f32[2,3]{1,0}, s8[64]{0})", as a cuBLAS gemm custom-call returns;
# nested tuples and tiled layouts such as "{1,0:T(8,128)}" hold parentheses too).
_HLO_INSTRUCTION = re.compile(
    rf"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|{_HLO_SHAPE})"
    r"\s+([a-z][\w\-]*)\((.*)$"
)
# The first line of a computation: "[ENTRY ]%name (params) -> shape {".
_HLO_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")


def _dims(shape: str) -> list[int]:
    """The dimensions of an array shape, or of a tuple shape's first element."""
    found = re.search(r"\w+\[([\d,]*)\]", shape)
    return [int(x) for x in found.group(1).split(",") if x] if found else []


def _instruction_macs(op: str, out: list[int], rest: str, shapes: dict[str, list[int]]) -> int:
    """Multiply-adds of one matmul-like instruction (0 for any other)."""

    def operand(index: int) -> list[int]:
        # Operands print as "%name" or "f32[4,8]{1,0} %name" (a layout may hold "(...)"):
        # the operand list is up to the parenthesis that closes it.
        depth, end = 1, len(rest)
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                end = i
                break
        names = re.findall(r"%([\w.\-]+)", rest[:end])
        return shapes[names[index]]

    if op == "dot":
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
        lhs = operand(0)
        return math.prod(out) * math.prod(lhs[int(i)] for i in contracting.split(",") if i)
    if op == "custom-call" and re.search(r'custom_call_target="[^"]*(gemm|matmul)', rest):
        # A GPU library matmul (cuBLAS, cuBLASLt): its dimension numbers in backend_config
        # (none there: a library call this does not know how to read, not counted).
        found = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', rest)
        if found is None:
            return 0
        lhs = operand(0)
        return math.prod(out) * math.prod(lhs[int(i)] for i in re.findall(r"\d+", found.group(1)))
    if op == "convolution":  # XLA may lower a matmul to one (TPU): out x kernel's fan-in
        labels = re.search(r"dim_labels=\w+_(\w+)->", rest)
        kernel = operand(1)
        if labels is None or len(labels.group(1)) != len(kernel):
            return 0
        return math.prod(out) * math.prod(
            n for n, label in zip(kernel, labels.group(1)) if label != "o"
        )
    return 0


def matmul_macs(hlo_text: str) -> int:
    """Multiply-adds of every matmul of a compiled HLO module's text: for each ``dot``,
    the number of its output elements times the product of its left operand's
    contracting dimensions; likewise a GPU library gemm (``custom-call`` to cuBLAS) and a
    ``convolution`` (output elements times the kernel's fan-in). Read from the optimised
    program (``compile().as_text()``), following the entry computation's calls: a fused
    or called computation counts once per call, a ``while`` body times its known trip
    count (once where XLA does not know it), a conditional its costliest branch. Exact,
    not timed."""
    comps: dict[str, list[tuple[str, list[int], str]]] = {}
    shapes: dict[str, list[int]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        header = _HLO_COMPUTATION.match(line)
        if header:
            current = header.group(2)
            comps[current] = []
            entry = current if header.group(1) else entry
            continue
        found = _HLO_INSTRUCTION.match(line)
        if not found:
            continue
        name, shape, op, rest = found.groups()
        shapes[name] = _dims(shape)
        comps.setdefault(current or "", []).append((op, shapes[name], rest))

    memo: dict[str, int] = {}

    def total(comp: str) -> int:
        if comp not in memo:
            memo[comp] = 0  # (no recursion in HLO; guards a malformed text)
            count = 0
            for op, out, rest in comps.get(comp, []):
                count += _instruction_macs(op, out, rest, shapes)
                for key in ("calls", "to_apply", "called_computations"):
                    # "calls=%a", "calls=%a, %b" or "called_computations={%a, %b}"
                    found = re.search(rf"\b{key}=(\{{[^}}]*\}}|%?[\w.\-]+(?:,\s*%[\w.\-]+)*)", rest)
                    for callee in re.findall(r"%?([\w.\-]+)", found.group(1)) if found else []:
                        count += total(callee)
                body = re.search(r"\bbody=%?([\w.\-]+)", rest)
                if body:
                    trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', rest)
                    count += total(body.group(1)) * (int(trips.group(1)) if trips else 1)
                branches = re.search(r"branch_computations=\{([^}]*)\}", rest)
                names = re.findall(r"%?([\w.\-]+)", branches.group(1)) if branches else []
                names += re.findall(r"\b(?:true|false)_computation=%?([\w.\-]+)", rest)
                count += max((total(b) for b in names), default=0)
            memo[comp] = count
        return memo[comp]

    if entry is None:  # a bare list of instructions: each counted once
        return sum(total(c) for c in comps)
    return total(entry)


def table(header: list[str], rows: list[list[object]]) -> str:
    def cell(x):
        return f"{x:.2f}" if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def mib(b: int | None) -> str:
    return "n/a" if b is None else f"{b / 2**20:.1f}"


def device_name() -> str:
    dev = jax.devices()[0]
    kind = str(getattr(dev, "device_kind", "") or "")
    name = dev.platform if kind.lower() in ("", dev.platform.lower()) else f"{dev.platform}-{kind}"
    return re.sub(r"[^a-z0-9._-]+", "_", name.lower()).strip("_") or "unknown"


class Report:
    """Prints each part as it is produced and keeps it for the results file."""

    def __init__(self):
        self.parts: list[str] = []

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.parts.append(text)

    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


# --------------------------------------------------------------------------- 1. floor


def section_floor(rep: Report, s: Sizes) -> None:
    m, n, d = s.ratio
    rep.add(f"## 1. Forward+backward time / floor (N={n}, M={m}, d={d}, float32)")
    rep.add()
    rep.add(
        "Floor: `jit(value_and_grad(mean(logsumexp(Z @ Z.T, axis=1))))` with Z the "
        f"{m}*{n} x {d} matrix of all embeddings (same M as the objective's row). "
        f"Objectives at their defaults with tau={TAU} (symile: logit_scale={1 / TAU:g}), "
        "timed with their aux dict returned (`has_aux=True`, as in training). "
        f"Median over {s.rounds} rounds of the per-round ratio."
    )
    rep.add()
    floors: dict[int, Callable] = {}
    data: dict[int, jax.Array] = {}
    cases: dict[str, tuple[Callable, Callable]] = {}
    row_m: dict[str, int] = {}
    for name in losses.names():
        mm = supported_m(name, m, n, d)
        if mm is None:
            continue
        if mm not in floors:
            data[mm] = make_z(mm, n, d)
            floors[mm] = block(floor_fwd_bwd(), data[mm])
        kw = objective_kwargs(name)
        row_m[name] = mm
        cases[name] = (block(objective_fwd_bwd(name, **kw), data[mm]), floors[mm])
        if s.chunk_all or name == "ova_ib":
            cases[f"{name}@chunk"] = (
                block(objective_fwd_bwd(name, chunk_size=s.chunk, **kw), data[mm]),
                floors[mm],
            )
    if s.breakdown:
        cases["ova_ib, loss only"] = (
            block(objective_fwd_bwd("ova_ib", aux=False, tau=TAU), data[m]),
            floors[m],
        )
    res = time_paired(cases, s.rounds)
    rows = []
    for name in losses.names():
        if name not in row_m:
            rows.append([name, "-", "unsupported", "unsupported", ""])
            continue
        target = ""
        if name == "ova_ib":  # on the median's interval, as the M sweep's
            low, high, cover = median_interval(res[name].ratios)
            target = target_verdict(res[name].ratio, low, high, RATIO_TARGET, cover)
        chunked = res[f"{name}@chunk"].ratio if f"{name}@chunk" in res else "-"
        rows.append([name, row_m[name], res[name].ratio, chunked, target])
    if "ova_ib, loss only" in res:
        only = res["ova_ib, loss only"].ratio
        rows.append(["ova_ib, loss only (aux not returned)", m, only, "", ""])
    rep.add(table(["objective", "M", "plain / floor", f"chunk={s.chunk} / floor", "target"], rows))
    rep.add()


def _suff_parts(z: jax.Array, part: str) -> jax.Array:
    """Sub-parts of ova_sufficiency's computation, each a complete scalar loss."""
    m_count = z.shape[0]
    q = l2_normalize(z)
    shared = None if part == "matmul" else ova._span_order_bases(list(q), 1e-8)  # as the library
    total = 0.0
    for m in range(m_count):
        rest = jnp.moveaxis(remaining(z, m), 0, 1)  # (N, M-1, d)
        if part == "matmul":  # normalised stacked rest vectors instead of a basis
            basis = l2_normalize(rest)
        else:
            basis = jnp.moveaxis(shared[m], 0, 1)
        s = safe_sqrt(projected_sq_norm(q[m], basis))
        logits = s / TAU
        total = total + jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))
    return total / m_count


def _bases_only(z: jax.Array) -> jax.Array:
    """The M leave-one-out Gram-Schmidt bases of the stacked-bases path (each in
    ``ova.span_order``: two shared passes), reduced to a scalar."""
    bases = ova._span_order_bases(list(l2_normalize(z)), 1e-8)
    return sum(jnp.sum(jnp.square(b)) for b in bases)


def _coefficients_only(z: jax.Array) -> jax.Array:
    """The two-halves path's basis coefficients (each half's Gram-Schmidt basis as
    combinations of its unit embeddings), reduced to a scalar."""
    q = list(l2_normalize(z))
    rows = ova._rows_half(len(q))
    halves = (rows, [i for i in range(len(q)) if i not in rows])
    coefs = [gram_schmidt_with_coefficients([q[i] for i in h])[1] for h in halves]
    return sum(jnp.sum(c) for per_half in coefs for row in per_half for c in row)


def _pair_matrices_only(z: jax.Array) -> jax.Array:
    """The N x N matmuls of the two-halves path (each pair of modalities of different
    halves once; for each modality, one per other modality of its own half, here against
    that modality's unit embeddings in place of its basis vectors), reduced to a scalar."""
    q = l2_normalize(z)
    m_count = z.shape[0]
    rows = ova._rows_half(m_count)
    pairs = {(r, c) for r in rows for c in range(m_count) if c not in rows}
    pairs |= {(a, b) for a in rows for b in rows if a != b}
    pairs |= {
        (a, b)
        for a in range(m_count)
        for b in range(m_count)
        if a != b and a not in rows and b not in rows
    }
    return sum(jnp.sum(q[i] @ q[j].T) for i, j in sorted(pairs))


def section_breakdown(rep: Report, s: Sizes) -> None:
    m, n, d = s.ratio
    rep.add(f"### Where ova_ib's time goes (N={n}, M={m}, d={d}), each / floor")
    rep.add()
    z = make_z(m, n, d)
    floor = block(floor_fwd_bwd(), z)
    steps = [
        ("stacked form: score matmul + sqrt + InfoNCE, no basis (normalised vectors)", "matmul"),
        ("stacked form: + Gram-Schmidt bases (the sharded and chunked path's core)", "basis"),
    ]
    cases = {
        label: (block(fwd_bwd(lambda z, p=part: _suff_parts(z, p)), z), floor)
        for label, part in steps
    }
    cases["ova_sufficiency (library), loss only"] = (
        block(objective_fwd_bwd("ova_sufficiency", aux=False, tau=TAU), z),
        floor,
    )
    cases["ova_sufficiency (library), with aux"] = (
        block(objective_fwd_bwd("ova_sufficiency", tau=TAU), z),
        floor,
    )
    cases["ova_ib (library), with aux"] = (block(objective_fwd_bwd("ova_ib", tau=TAU), z), floor)
    cases["Gram-Schmidt bases alone (sum of squares of all M bases)"] = (
        block(fwd_bwd(_bases_only), z),
        floor,
    )
    cases["their coefficients alone (the two-halves path's, summed)"] = (
        block(fwd_bwd(_coefficients_only), z),
        floor,
    )
    cases["pair matrices alone (the two-halves path's matmuls, summed)"] = (
        block(fwd_bwd(_pair_matrices_only), z),
        floor,
    )
    cases["ova_minimality alone"] = (
        block(fwd_bwd(lambda z: losses.ova_minimality(z)[0]), z),
        floor,
    )
    res = time_paired(cases, s.rounds)
    rows = [[k, v.ratio] for k, v in res.items()]
    rep.add(table(["computation (forward+backward)", "/ floor"], rows))
    rep.add()


# --------------------------------------------------------------------------- 1b. M sweep


def _ova_ib_before(z: jax.Array, tau: float = TAU, lam: float = 1e-8) -> tuple:
    """``ova_ib`` (beta = 1, batch negatives, plain) as the library computed it before
    issue 15 (commit adb415f), for the side-by-side timing of the M sweep: for each m a
    separate guarded Gram-Schmidt of the M-1 remaining unit embeddings in (N, M-1, d)
    layout (``span_basis``), the score matmul against the (N, M-1, d) bases, the masked
    single-block InfoNCE statistics of ``_core.contrast`` and the einsum minimality. The
    same values as the library (up to float32 rounding); only its speed is of interest.
    """
    m_count, n, _ = z.shape
    scale = 1.0 / tau
    queries = l2_normalize(z)
    row_ids = jnp.arange(n, dtype=jnp.int32)
    results = []
    for m in range(m_count):
        rest = remaining(queries, m)
        basis = span_basis(jnp.moveaxis(rest, 0, 1), lam, normalized=True)[0]
        s = safe_sqrt(projected_sq_norm(queries[m], basis)).astype(jnp.float32)
        # _core.contrast's block statistics (then) for its single block.
        cols = jnp.arange(n, dtype=jnp.int32)
        valid = cols >= 0
        is_pos = (cols[None, :] == row_ids[:, None]) & valid[None, :]
        logits = s * scale
        masked = jnp.where(valid[None, :], logits, -jnp.inf)
        is_neg = valid[None, :] & ~is_pos
        r_max = jax.lax.stop_gradient(jnp.max(masked, axis=1))
        r_max = jnp.where(jnp.isfinite(r_max), r_max, float(jnp.finfo(jnp.float32).min))
        rows = _core.RowStats(
            lse=r_max + jnp.log(jnp.sum(jnp.exp(masked - r_max[:, None]), axis=1)),
            pos=jnp.sum(jnp.where(is_pos, s, 0.0), axis=1),
            logit_sum=jnp.zeros_like(r_max),
            neg_max=jax.lax.stop_gradient(jnp.max(jnp.where(is_neg, s, -jnp.inf), axis=1)),
            score_sum=jax.lax.stop_gradient(jnp.sum(jnp.where(valid[None, :], s, 0.0), axis=1)),
        )
        stats = _core.Contrast(rows, None, n, n, False)
        results.append(_core.infonce(stats, scale=scale))
    loss_s, aux = _core.mean_of_terms(results, "sufficiency", math.log(n))
    mu = queries
    total = sum(mu[m] for m in range(m_count))
    per_sample = (
        m_count**2 * jnp.sum(mu * mu, axis=-1)
        - 2 * m_count * jnp.einsum("mnd,nd->mn", mu, total)
        + jnp.sum(total * total, axis=-1)[None]
    ) / (m_count - 1) ** 2
    terms = jnp.sum(jnp.maximum(per_sample, 0.0), axis=1) / n
    aux.update({f"minimality/m{m}": terms[m] for m in range(m_count)})
    aux["minimality"] = jnp.mean(terms)
    return loss_s + jnp.mean(terms), aux


def _ova_ib_stacked(z: jax.Array, tau: float = TAU, lam: float = 1e-8) -> tuple:
    """``ova_ib`` (beta = 1) through the library's stacked-bases path (each modality's
    queries against all M-1 basis vectors of every candidate), which the two-halves path
    replaced where it applies and which sharded and chunked batches still take."""
    queries = list(l2_normalize(z))
    loss_s, aux = ova._sufficiency(
        z, queries, tau=tau, lam=lam, exclude_positive=False, projector=None,
        product_weight=0.0, negatives="batch", key=None, axis_name=None, chunk_size=None,
        two_halves=False,
    )  # fmt: skip
    loss_m, aux_m = ova._minimality(queries, None)
    aux.update(aux_m)
    return loss_s + loss_m, aux


def section_m_sweep(rep: Report, s: Sizes) -> None:
    _, n, d = s.ratio
    lo, hi = min(s.sweep_m), max(s.sweep_m)
    rep.add(f"### ova_ib / floor for M = {lo} to {hi} (N={n}, d={d}, float32)")
    rep.add()
    stretch_m, stretch = SWEEP_STRETCH
    rep.add(
        "Forward+backward with the aux dict returned, each against the floor of the same M "
        "(one jitted function per M, so every floor is compiled for its own shape). "
        "'before': the implementation this one replaced, `_ova_ib_before` in this file "
        "(per-modality Gram-Schmidt, masked InfoNCE statistics), timed in the same rounds; "
        "'after / before' is timed head to head. 'stacked': the library's stacked-bases "
        "path (`_ova_ib_stacked`: each modality's queries against all M-1 basis vectors of "
        "every candidate, the path of sharded and chunked batches), which the two-halves "
        "path (pair matrices U_r U_c^T of the two halves, shared by their two modalities) "
        "replaced on one "
        "device; 'after / stacked' timed head to head. Every M of every column is measured "
        "in each "
        f"of the {s.rounds} interleaved rounds (order alternating), medians of the per-round "
        f"ratios. Target: <= {SWEEP_TARGET:g} at every M, <= {stretch:g} at M = {stretch_m}. "
        "'interval': a distribution-free interval of the median ova_ib / floor from the "
        "rounds' order statistics (`median_interval`, its coverage given); the verdict is "
        "PASS or MISS when the whole interval is on one side of the target, 'cannot tell' "
        "when it straddles it. 'matmul work': the multiply-adds of the matmuls in the "
        "compiled forward+backward (`matmul_macs`, read from the optimised program: exact, "
        "not timed), ova_ib's and the stacked form's, each over the floor's (whose three "
        "matmuls, Z Z^T and the two of its gradient, do 3 (M N)^2 d). 'stacked floor': "
        "the least any stacked-bases form can cost, the floor's row-wise logsumexp of each "
        "modality's queries times M-1 (random) vectors per candidate "
        "(`stacked_floor_loss`), i.e. the stacked form's matmuls alone, gradients to both "
        "operands; its matmul work is (M-1)/M of the floor's."
    )
    rep.add()
    fn = objective_fwd_bwd("ova_ib", tau=TAU)
    before = fwd_bwd(_ova_ib_before, has_aux=True)
    stacked = fwd_bwd(_ova_ib_stacked, has_aux=True)
    stacked_floor = jax.jit(jax.value_and_grad(stacked_floor_loss, argnums=(0, 1)))
    floor = floor_fwd_bwd()
    cases = {}
    for m in s.sweep_m:
        z = make_z(m, n, d)
        after_t, before_t, floor_t = block(fn, z), block(before, z), block(floor, z)
        stacked_t = block(stacked, z)
        bases = make_z(m, (m - 1) * n, d, seed=1) / jnp.sqrt(d)
        cases[(m, "stacked floor")] = (block(stacked_floor, z, bases), floor_t)
        cases[(m, "after")] = (after_t, floor_t)
        cases[(m, "before")] = (before_t, floor_t)
        cases[(m, "head to head")] = (after_t, before_t)
        cases[(m, "stacked")] = (stacked_t, floor_t)
        cases[(m, "after / stacked")] = (after_t, stacked_t)
    res = time_paired(cases, s.rounds)
    rows = []
    for m in s.sweep_m:
        after = res[(m, "after")]
        low, high, cover = median_interval(after.ratios)
        target = target_verdict(after.ratio, low, high, SWEEP_TARGET, cover)
        if m == stretch_m:
            target += "; stretch " + target_verdict(after.ratio, low, high, stretch, cover)
        interval = f"[{low:.2f}, {high:.2f}] ({100 * cover:.1f} %)"
        after_t, floor_t = cases[(m, "after")]
        stacked_t = cases[(m, "stacked")][0]
        floor_macs = floor_t.macs()

        def work(t: Thunk, floor_macs: int = floor_macs) -> float | str:
            return t.macs() / floor_macs if floor_macs else "n/a"  # matmuls not read: n/a

        rows.append(
            [m, after.ratio, interval, work(after_t), res[(m, "before")].ratio,
             res[(m, "head to head")].ratio, res[(m, "stacked")].ratio,
             work(stacked_t), res[(m, "stacked floor")].ratio,
             work(cases[(m, "stacked floor")][0]),
             res[(m, "after / stacked")].ratio, target]
        )  # fmt: skip
    header = [
        "M", "ova_ib / floor", "interval", "ova_ib matmul work / floor's", "before / floor",
        "after / before", "stacked / floor", "stacked matmul work / floor's",
        "stacked floor / floor", "its matmul work / floor's", "after / stacked", "target",
    ]  # fmt: skip
    rep.add(table(header, rows))
    rep.add()


# --------------------------------------------------------------------------- 2. literal


def literal_sufficiency(z: jax.Array, tau: float = TAU, lam: float = 1e-8) -> jax.Array:
    """The paper's eq. 11 taken literally: one regularised solve per (sample, candidate).

    For modality m, sample n and candidate n': ``A`` = the remaining embeddings of n'
    (d x (M-1)), ``zbar = A (A^T A + lam I)^-1 A^T z[m, n]`` (``jnp.linalg.solve``,
    vmapped over all N x N pairs), score ``cos(z[m, n], zbar)``; InfoNCE over n' (the
    positive included), mean over n, then over m.
    """
    m_count = z.shape[0]
    k = m_count - 1
    eye = jnp.eye(k, dtype=z.dtype)

    def pair_score(zq, a):  # zq (d,), a (d, K)
        w = jnp.linalg.solve(a.T @ a + lam * eye, a.T @ zq)
        zbar = a @ w
        return jnp.dot(zq, zbar) / (jnp.linalg.norm(zq) * jnp.linalg.norm(zbar))

    per_pair = jax.vmap(jax.vmap(pair_score, in_axes=(None, 0)), in_axes=(0, None))
    terms = []
    for m in range(m_count):
        a_all = jnp.transpose(remaining(z, m), (1, 2, 0))  # (N, d, K): A of each candidate
        logits = per_pair(z[m], a_all) / tau  # (N queries, N candidates)
        terms.append(jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits)))
    return sum(terms) / m_count


def section_literal(rep: Report, s: Sizes, forward_only: bool) -> None:
    m, n, d = s.literal
    rep.add(f"## 2. ova_ib vs the literal pair-by-pair eq. 11 (N={n}, M={m}, d={d})")
    rep.add()
    z = make_z(m, n, d)
    suff_fn = objective_fwd_bwd("ova_sufficiency", tau=TAU)
    lit_fb = fwd_bwd(literal_sufficiency)
    (ours, _), g_ours = suff_fn(z)
    lit, g_lit = lit_fb(z)
    ours, lit = float(ours), float(lit)
    rel = abs(ours - lit) / max(abs(lit), 1e-12)
    g_rel = float(jnp.max(jnp.abs(g_ours - g_lit)) / jnp.max(jnp.abs(g_lit)))
    ok = rel <= 1e-3 and g_rel <= 1e-3
    rep.add(
        f"Agreement: ova_sufficiency = {ours:.6f}, literal = {lit:.6f}, relative difference "
        f"{rel:.1e}; gradients: max abs difference / max abs gradient = {g_rel:.1e} "
        f"({'OK' if ok else 'FAIL'}, tolerance 1e-3 for both)."
    )
    rep.add()
    assert ok, f"literal eq. 11 and ova_sufficiency disagree: {lit} vs {ours}, gradients {g_rel}"
    mode = "forward only" if forward_only else "forward+backward"
    lit_fwd = block(jax.jit(literal_sufficiency), z)
    lit_fn = lit_fwd if forward_only else block(lit_fb, z)
    cases = {
        "ova_sufficiency (beta = 0 term alone)": (block(suff_fn, z), lit_fn),
        "ova_ib (beta = 1)": (block(objective_fwd_bwd("ova_ib", tau=TAU), z), lit_fn),
        "ova_ib (beta = 1), forward only": (
            block(jax.jit(lambda z: losses.ova_ib(z, tau=TAU)), z),
            lit_fwd,
        ),
    }
    res = time_paired(cases, s.rounds)
    rows = []
    for label, t in res.items():
        speedup = 1.0 / t.ratio
        fwd = "forward only" in label
        lit_mode = "forward only" if fwd or forward_only else "forward+backward"
        ours_mode = "forward only" if fwd else "forward+backward"
        target = ""
        if not fwd:  # speed-up >= S is t(ours) / t(literal) <= 1 / S, on the same interval
            low, high, cover = median_interval(t.ratios)
            verdict = target_verdict(t.ratio, low, high, 1 / SPEEDUP_TARGET, cover)
            outcome = verdict.split(": ", 1)[1]
            if outcome.startswith("cannot tell"):  # said in speed-ups, not ratios
                outcome = (
                    f"cannot tell (median speed-up {speedup:.1f}x; interval "
                    f"{1 / high:.1f}-{1 / low:.1f}x, coverage {100 * cover:.1f} %)"
                )
            target = f">= {SPEEDUP_TARGET:g}x: {outcome}"
        rows.append([label, ours_mode, f"literal, {lit_mode}", f"{speedup:.1f}x", target])
    rep.add(table(["ours", "timed", "against", "speed-up", "target"], rows))
    rep.add()
    rep.add(f"(literal form timed {mode}; speed-up = t(literal) / t(ours), median of rounds)")
    rep.add()


# --------------------------------------------------------------------------- 3. memory


def section_memory(rep: Report, s: Sizes) -> None:
    m, d = s.memory_md
    rep.add(f"## 3. Compiled temporary memory of forward+backward (M={m}, d={d}, MiB)")
    rep.add()
    rep.add(
        "`jit(value_and_grad(f)).lower(ShapeDtypeStruct).compile().memory_analysis()"
        ".temp_size_in_bytes` (loss only, no execution). Growth: ratio to the previous N; "
        "exponent: log(growth) / log(N ratio) (1 = linear, 2 = quadratic)."
    )
    rep.add()

    def growth(prev, cur, n_prev, n_cur):
        if prev is None or cur is None or prev <= 0:
            return "", ""
        g = cur / prev
        return f"{g:.1f}x", f"{math.log(g) / math.log(n_cur / n_prev):.2f}"

    rows = []
    prev = (None, None, None)
    for n in s.memory_n:
        plain = temp_bytes(objective_fwd_bwd("ova_ib", aux=False), (m, n, d))
        chunk = temp_bytes(objective_fwd_bwd("ova_ib", aux=False, chunk_size=s.chunk), (m, n, d))
        gp, ep = growth(prev[1], plain, prev[0], n) if prev[0] else ("", "")
        gc, ec = growth(prev[2], chunk, prev[0], n) if prev[0] else ("", "")
        rows.append([n, mib(plain), gp, ep, mib(chunk), gc, ec])
        prev = (n, plain, chunk)
    rep.add(
        table(
            [
                "N",
                "ova_ib plain",
                "growth",
                "exponent",
                f"ova_ib chunk={s.chunk}",
                "growth",
                "exponent",
            ],
            rows,
        )
    )
    rep.add()
    rows = []
    for name in ("pairwise_clip", "gram"):
        for n in s.memory_other_n:
            plain = temp_bytes(objective_fwd_bwd(name, aux=False), (m, n, d))
            chunk = temp_bytes(objective_fwd_bwd(name, aux=False, chunk_size=s.chunk), (m, n, d))
            rows.append([name, n, mib(plain), mib(chunk)])
    if rows:
        rep.add(table(["objective", "N", "plain", f"chunk={s.chunk}"], rows))
        rep.add()


# --------------------------------------------------------------------------- 4. scaling


def section_scaling(rep: Report, s: Sizes) -> None:
    m0, n0, d0 = s.scale_base
    rep.add(f"## 4. Scaling of ova_ib forward+backward (base M={m0}, N={n0}, d={d0}; aux returned)")
    rep.add()
    rep.add(
        "'/ floor': ratio to the floor of the same size. 'time vs smallest' and 'floor vs "
        "smallest': median time relative to the smallest size of the same sweep (all sizes "
        "of all sweeps interleaved in one process; these two columns are not paired "
        "per round, so they are noisier than '/ floor')."
    )
    rep.add()
    sweeps = [
        ("N", [(m0, n, d0) for n in s.scale_n]),
        ("M", [(m, n0, d0) for m in s.scale_m]),
        ("d", [(m0, n0, d) for d in s.scale_d]),
    ]
    fn = objective_fwd_bwd("ova_ib", tau=TAU)
    floor = floor_fwd_bwd()
    cases = {}
    for _, shapes in sweeps:
        for shape in shapes:
            if shape not in cases:
                z = make_z(*shape)
                cases[shape] = (block(fn, z), block(floor, z))
    res = time_paired(cases, s.scale_rounds)  # every shape of every sweep interleaved
    for axis, shapes in sweeps:
        base = res[shapes[0]]
        rows = []
        for shape in shapes:
            value = shape["MNd".index(axis)]
            t = res[shape]
            rows.append([value, t.ratio, t.time / base.time, t.ref_time / base.ref_time])
        rep.add(table([axis, "/ floor", "time vs smallest", "floor vs smallest"], rows))
        rep.add()


# --------------------------------------------------------------------------- 5. symile


def section_symile(rep: Report, s: Sizes) -> None:
    rep.add("## 5. symile vs the reference PyTorch `symile` package")
    rep.add()
    if importlib.util.find_spec("symile") is None or importlib.util.find_spec("torch") is None:
        rep.add(
            "Skipped: the `symile` package and torch are not importable. Enable with "
            "`pip install -e .[bench]`."
        )
        rep.add()
        return
    import torch
    from symile import Symile

    m, n, d = s.symile
    scale = 1.0 / TAU
    z = l2_normalize(make_z(m, n, d))  # unit embeddings, as Symile's models produce
    z_np = np.asarray(z)
    ours_fn = jax.jit(
        jax.value_and_grad(lambda z: losses.symile(z, logit_scale=scale, negatives="n_squared")[0])
    )
    ours, g_ours = ours_fn(z)
    ref_loss = Symile(negative_sampling="n_squared")

    def torch_step():
        reps = [torch.tensor(z_np[i], requires_grad=True) for i in range(m)]
        loss = ref_loss(reps, scale)
        loss.backward()
        return loss.detach().numpy(), np.stack([r.grad.numpy() for r in reps])

    theirs, g_theirs = torch_step()
    rel = abs(float(ours) - float(theirs)) / abs(float(theirs))
    g_rel = float(np.max(np.abs(np.asarray(g_ours) - g_theirs)) / np.max(np.abs(g_theirs)))
    rep.add(
        f"M={m}, N={n}, d={d}, negatives n_squared (N^2 = {n * n} candidates per anchor, "
        f"deterministic for M = 3), logit_scale={scale:g}: ours = {float(ours):.6f}, symile "
        f"{importlib.metadata.version('symile')} = {float(theirs):.6f}, relative difference "
        f"{rel:.1e}; gradients: max abs difference / max abs gradient = {g_rel:.1e} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)."
    )
    rep.add()
    res = time_paired({"ours": (block(ours_fn, z), torch_step)}, s.rounds)
    ratio = res["ours"].ratio
    rep.add(
        table(
            ["forward+backward", "t(ours) / t(symile package)", "speed-up"],
            [["symile, n_squared (ours jitted, package eager)", ratio, f"{1 / ratio:.1f}x"]],
        )
    )
    rep.add()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (< 60 s)")
    parser.add_argument(
        "--out",
        type=Path,
        default=_REPO / "benchmarks" / "results",
        help="folder of the results file (default benchmarks/results)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case")
    parser.add_argument(
        "--literal-forward-only",
        action="store_true",
        help="time the literal eq. 11 form forward only (if its backward is too slow)",
    )
    parser.add_argument(
        "--symile-reference",
        action="store_true",
        help="compare with the PyTorch `symile` package (pip install -e .[bench])",
    )
    parser.add_argument(
        "--sections",
        default="1,2,3,4,5",
        help="comma-separated sections to run (default all; 5 needs --symile-reference; "
        "1m: only section 1's M sweep, e.g. with more --rounds)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.rounds is not None:
        sizes = dataclasses.replace(sizes, rounds=args.rounds, scale_rounds=args.rounds)
    if sizes.fast_compile:
        # Read when the backend starts (first use), so setting it here still applies.
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = sorted(sections - {"1", "1m", "2", "3", "4", "5"})
    if unknown:  # else it would run nothing and write an empty report
        parser.error(f"unknown --sections {unknown}; valid: 1, 1m, 2, 3, 4, 5.")

    today = datetime.date.today().isoformat()
    dev = device_name()
    rep = Report()
    rep.add(f"# Loss benchmark, {today}, {dev}{' (--quick)' if args.quick else ''}")
    rep.add()
    cli_args = sys.argv[1:] if argv is None else argv
    cli = " ".join(["python benchmarks/loss_benchmark.py", *cli_args])
    rep.add(
        f"jax {jax.__version__}, {jax.devices()[0].platform} device "
        f"`{jax.devices()[0].device_kind}` ({jax.device_count()} device(s)), "
        f"{os.cpu_count()} CPU core(s) visible, Python {platform.python_version()}. "
        f"Command: `{cli}`."
    )
    rep.add(
        "Every time is a ratio of runs timed side by side in this process: per round, the "
        "reference then the case, each the median of back-to-back calls after an untimed "
        f"one (steady state); the median over {sizes.rounds} rounds ({sizes.scale_rounds} "
        "in section 4) of the per-round ratios. Memory is XLA's compiled estimate. "
        f"Data: z[m] = shared + {NOISE:g} * noise (Gaussian)."
    )
    if sizes.fast_compile:
        rep.add(
            "**--quick: a smoke run at tiny sizes compiled with XLA optimisation level 0; "
            "its ratios mean nothing.**"
        )
    rep.add()
    if "1" in sections:
        section_floor(rep, sizes)
        section_m_sweep(rep, sizes)
        if sizes.breakdown:
            section_breakdown(rep, sizes)
    elif "1m" in sections:
        section_m_sweep(rep, sizes)
    if "2" in sections:
        section_literal(rep, sizes, args.literal_forward_only)
    if "3" in sections:
        section_memory(rep, sizes)
    if "4" in sections:
        section_scaling(rep, sizes)
    if "5" in sections:
        if args.symile_reference:
            section_symile(rep, sizes)
        else:
            rep.add(
                "## 5. symile vs the reference PyTorch `symile` package\n\nNot run: pass "
                "`--symile-reference` (needs `pip install -e .[bench]`)."
            )
            rep.add()
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    path = args.out / f"loss_benchmark_{today}_{dev}{suffix}.md"
    path.write_text(rep.text())
    print(f"Wrote {path}", flush=True)
    return path


if __name__ == "__main__":
    main()
