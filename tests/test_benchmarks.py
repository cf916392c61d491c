"""The benchmarks' smoke runs (loss: end to end, every objective; input: its three parts)
and the loss benchmark's interval of a median ratio."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ovaib_jax import losses
from tests.train_helpers import one_real_device

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "loss_benchmark.py"


@pytest.mark.slow
def test_loss_benchmark_quick(tmp_path):
    env = dict(os.environ)
    # conftest.py asks for 8 fake CPU devices; the benchmark measures one real device.
    one_real_device(env)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # about 45 s on 2 busy cores; the margin is for a loaded CI machine
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(tmp_path.glob("loss_benchmark_*.md"))
    assert len(files) == 1, files
    text = files[0].read_text()
    assert text.strip().splitlines()[0].startswith("# Loss benchmark")

    # Section 1's table has one row per registered objective, with a ratio in it.
    section = text.split("## 1.")[1].split("\n## ")[0]
    for name in losses.names():
        row = re.search(rf"^\| {re.escape(name)} \| (\d+) \| (\d+\.\d+) \|", section, re.M)
        assert row, f"no ratio row for {name!r} in:\n{section}"
    assert re.search(r"\| ova_ib \|.*\| <= 1\.3: (PASS|MISS|cannot tell [^|]*) \|", section)
    # The literal eq. 11 form agreed with ova_sufficiency, and every section was written.
    assert "(OK, tolerance 1e-3 for both)" in text  # value and gradients
    for heading in ("## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text
    assert f"Wrote {files[0]}" in proc.stdout

    # The M sweep's matmul work, read from the compiled programs, is the closed form:
    # the floor runs 3 matmuls of (M N)^2 d; the stacked form 3 M (M-1) N^2 d; the
    # shared-pair path one N x N x d matmul per pair plus sum_m min(m, M-1-m) pairs
    # computed twice for their orientation, and two per matrix in the backward pass
    # (3 per matrix, as for the floor: the ratio is matrices / M^2).
    sweep = text.split("### ova_ib / floor for M = ")[1].split("\n#")[0]
    for m in (2, 3):
        row = re.search(rf"^\| {m} \| .*$", sweep, re.M).group(0).split(" | ")
        pairs = math.comb(m, 2) + sum(min(k, m - 1 - k) for k in range(m))
        assert float(row[3]) == pytest.approx(pairs / m**2, abs=0.006), row
        assert float(row[7]) == pytest.approx((m - 1) / m, abs=0.006), row
        assert float(row[9]) == pytest.approx((m - 1) / m, abs=0.006), row  # stacked floor


def test_matmul_macs_counts_every_compiled_matmul():
    """Hand counts: output elements x contracted size, for plain, batched and multi-axis
    contractions, and the floor's three matmuls (Z Z^T and the two of its gradient)."""
    import jax
    import jax.numpy as jnp

    bench = _loss_benchmark()

    def macs(fn, *shapes):
        return bench.block(jax.jit(fn), *(jnp.ones(s) for s in shapes)).macs()

    assert macs(lambda a, b: a @ b, (3, 4), (4, 5)) == 3 * 5 * 4
    assert macs(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), (2, 3, 4), (2, 4, 5)) == 120
    assert macs(lambda a, b: jnp.einsum("ijk,jkl->il", a, b), (2, 3, 4), (3, 4, 5)) == 2 * 5 * 12
    assert macs(lambda a: jnp.sum(a * a), (3, 4)) == 0
    m, n, d = 2, 8, 4
    floor = bench.block(bench.floor_fwd_bwd(), jnp.ones((m, n, d)))
    assert floor.macs() == 3 * (m * n) ** 2 * d
    # A loop's matmuls count once per trip (they counted once: 96 and 64).
    scan = lambda a, b: jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=5)[0]  # noqa: E731
    assert macs(scan, (4, 8), (8, 8)) == 5 * 4 * 8 * 8
    loop = lambda a: jax.lax.fori_loop(0, 5, lambda i, c: c @ a, a)  # noqa: E731
    assert macs(loop, (4, 4)) == 5 * 4 * 4 * 4
    # A GPU library gemm (cuBLAS custom-call, tuple shape, dimensions in backend_config)
    # and a convolution, as XLA prints them on GPU and TPU (no such device here).
    gemm = (
        "ENTRY %main (p0: f32[64,32], p1: f32[32,16]) -> f32[64,16] {\n"
        "  %p0 = f32[64,32]{1,0} parameter(0)\n"
        "  %p1 = f32[32,16]{1,0} parameter(1)\n"
        "  %custom-call.1 = (f32[64,16]{1,0}, s8[4194304]{0}) custom-call(f32[64,32]{1,0} %p0, "
        'f32[32,16]{1,0} %p1), custom_call_target="__cublas$gemm", backend_config={'
        '"gemm_backend_config":{"alpha_real":1,"dot_dimension_numbers":{'
        '"lhs_contracting_dimensions":["1"],"rhs_contracting_dimensions":["0"],'
        '"lhs_batch_dimensions":[],"rhs_batch_dimensions":[]}}}\n'
        "  ROOT %gte = f32[64,16]{1,0} get-tuple-element(%custom-call.1), index=0\n"
        "}\n"
    )
    assert bench.matmul_macs(gemm) == 64 * 16 * 32
    conv = (
        "ENTRY %main (p0: f32[8,32], p1: f32[32,16]) -> f32[8,16] {\n"
        "  %p0 = f32[8,32]{1,0} parameter(0)\n"
        "  %p1 = f32[32,16]{1,0} parameter(1)\n"
        "  ROOT %convolution.1 = f32[8,16]{1,0} convolution(%p0, %p1), dim_labels=bf_io->bf\n"
        "}\n"
    )
    assert bench.matmul_macs(conv) == 8 * 16 * 32
    # Operands printed with tiled layouts (TPU), holding parentheses: the operand list
    # was cut at the first ")".
    tiled = conv.replace(
        "convolution(%p0, %p1)",
        "convolution(f32[8,32]{1,0:T(8,128)} %p0, f32[32,16]{1,0:T(8,128)} %p1)",
    )
    assert bench.matmul_macs(tiled) == 8 * 16 * 32


def _loss_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("loss_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["loss_benchmark"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_median_interval_order_statistics_and_coverage():
    import math

    bench = _loss_benchmark()
    # Hand values: n = 7 -> min and max, 1 - 2 / 2^7; n = 9 -> 2nd and 8th, 1 - 2 * 10 / 2^9;
    # n = 5 -> min and max, whose 93.75 % is the most five rounds give.
    assert bench.median_interval([5, 1, 7, 3, 2, 6, 4]) == (1, 7, 1 - 2 / 128)
    assert bench.median_interval([9, 1, 8, 2, 7, 3, 6, 4, 5]) == (2, 8, 1 - 20 / 512)
    assert bench.median_interval([3, 1, 2, 5, 4]) == (1, 5, 1 - 2 / 32)
    # Coverage by enumeration: the median of a continuous distribution falls below each
    # of n values independently with probability 1/2; the interval misses it when fewer
    # than k, or more than n - k, of them lie below it.
    for n in range(1, 25):
        low, high, cover = bench.median_interval(list(range(n)))
        k = low + 1
        assert high == n - k
        miss = sum(math.comb(n, j) for j in range(n + 1) if j < k or j > n - k) / 2**n
        assert cover == pytest.approx(1 - miss)
        assert cover >= 0.95 or k == 1
        if k + 1 <= (n + 1) // 2:  # the next order statistics would fall short of 95 %
            tighter = sum(math.comb(n, j) for j in range(n + 1) if j < k + 1 or j > n - k - 1)
            assert 1 - tighter / 2**n < 0.95


def test_target_verdict():
    bench = _loss_benchmark()
    assert bench.target_verdict(0.95, 0.92, 0.99, 1.0) == "<= 1: PASS"
    assert bench.target_verdict(1.05, 1.01, 1.10, 1.0) == "<= 1: MISS"
    assert bench.target_verdict(1.01, 0.97, 1.04, 1.0).startswith("<= 1: cannot tell (median above")
    assert bench.target_verdict(0.99, 0.97, 1.04, 1.0).startswith("<= 1: cannot tell (median below")
    # Min-max of 2, 3 or 5 rounds covers the median at 50, 75, 94 %: no verdict (was PASS).
    for n in (2, 3, 5):
        low, high, cover = bench.median_interval([0.9 + 0.01 * i for i in range(n)])
        verdict = bench.target_verdict(0.92, low, high, 1.0, cover)
        assert verdict == "<= 1: cannot tell (median below; too few rounds for a 95 % interval)"
    low, high, cover = bench.median_interval([0.9 + 0.01 * i for i in range(7)])
    assert bench.target_verdict(0.93, low, high, 1.0, cover) == "<= 1: PASS"  # 98.4 %


@pytest.mark.slow
def test_input_benchmark_quick(tmp_path):
    """benchmarks/input_benchmark.py --quick runs its three parts end to end and writes
    each part's ratios with a verdict (the numbers of a smoke run mean nothing)."""
    env = dict(os.environ)
    one_real_device(env)
    # The default config's parity data, smaller, built under tmp_path (it was built at
    # full size, 24k examples, into ~/tensorflow_datasets).
    env["OVAIB_DATA_DIR"] = str(tmp_path / "data")
    small = ["--config.dataset.config.num_train=2048", "--config.dataset.config.num_test=512"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "input_benchmark.py"), "--quick",
         f"--out={tmp_path}", *small],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(tmp_path.glob("input_benchmark_*.md"))
    assert len(files) == 1, files
    text = files[0].read_text()
    for heading in ("## 1.", "## 2.", "## 3."):
        assert heading in text
    ratio = r"\*\*(\d+\.\d+)\*\* \(quartiles \d+\.\d+-\d+\.\d+; target >= 0\.9: (PASS|MISS)\)"
    assert re.search(rf"uncached / cached steps/s: {ratio}", text), text
    assert re.search(r"\| `prefetch=0` \| \*\*\d+\.\d+\*\* \(.*\) (PASS|MISS) \|", text), text
    runs = text.split("## 3.")[1]
    assert re.search(r"\| uncached \(`cache_max_mb=0`\) \| \d+ \| \d+\.\d+ \(median", runs), runs


def test_unknown_sections_are_an_error_not_an_empty_report(tmp_path, capsys):
    """A misspelt section ran nothing and wrote a report with no table; the M sweep alone
    is "1m"."""
    bench = _loss_benchmark()
    with pytest.raises(SystemExit) as e:
        bench.main(["--sections", "1,7", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "unknown --sections ['7']; valid: 1, 1m, 2, 3, 4, 5." in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
