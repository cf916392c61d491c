"""Input pipeline throughput without the in-memory cache (issue 15).

    python benchmarks/input_benchmark.py [--config=experiments/default.py] [--steps=500]
        [--image_examples=1500] [--image_batch=64] [--run_pairs=3] [--quick]

Two measurements, each with its variants alternating chunk by chunk (alternating which goes
first) in one process, medians over the chunks, so that a change of the machine's load
hits every variant alike:

1. The default config's train steps/s fed by the real pipeline with
   ``--config.dataset.cache_max_mb=0`` (records read from the ArrayRecord files and decoded
   at every step) against the cached run (``cache_max_mb=512``: the split decoded into
   memory once), built with ``ovaib_jax.train.build`` and fed through
   ``inputs.device_batches`` as the trainer does (``device_prefetch`` thread). A third
   variant reads the same records through TFDS's per-example decode (the pipeline before
   the vectorised decoder), a fourth uncached with ``--config.dataset.shuffle_block=16``
   (blocks of 16 consecutive records shuffled, read in runs). Target: uncached / cached
   >= 0.9.
2. A synthetic image dataset of the paper's size class (vision_touch-like: 128 x 128 x 3
   uint8 RGB, a 128 x 128 x 1 float32 depth map, 32 x 6 float32 force readings, a binary
   and a 4-d target; about 140 kB a record, several ArrayRecord files), built with the
   project's builder machinery (a ``SpecBuilder``) into a temporary data_dir: examples/s
   of the pipeline (``data.make_iterator``) against the raw ArrayRecord reads of the same
   records in the same batches (array_record's ``ArrayRecordDataSource.__getitems__``,
   bytes only, nothing decoded). Target: pipeline / raw >= 0.5.

3. Whole training runs (``python -m ovaib_jax.main`` with the same config, no evaluation),
   cached and uncached alternating run by run: the trainer's own logged steps/s, the
   measurement the issue's target is stated in (part 1's in-process chunks also time the
   switch between variants, which costs the uncached one more).

Prints markdown and writes ``benchmarks/results/input_benchmark_<date>_<platform>.md``.
"""

from __future__ import annotations

import copy
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, ClassVar

from absl import app, flags
from ml_collections import config_flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

config_flags.DEFINE_config_file(
    "config",
    os.path.join(_ROOT, "experiments", "default.py"),
    "Experiment config (part 1).",
    lock_config=True,
)
flags.DEFINE_integer("steps", 500, "Part 1: timed steps per variant.")
flags.DEFINE_integer("chunk", 25, "Part 1: steps per timed chunk (variants alternate by chunk).")
flags.DEFINE_integer("warmup", 20, "Part 1: untimed steps of each variant before timing.")
flags.DEFINE_integer("shuffle_block", 16, "Part 1: the block of the block-shuffled variant.")
flags.DEFINE_integer("image_examples", 1500, "Part 2: examples of the synthetic image dataset.")
flags.DEFINE_integer("image_batch", 64, "Part 2: examples per batch.")
flags.DEFINE_integer("image_batches", 48, "Part 2: timed batches per variant.")
flags.DEFINE_integer("image_chunk", 4, "Part 2: batches per timed chunk.")
flags.DEFINE_string("image_data_dir", "", "Part 2: keep the built dataset here (default: temp).")
flags.DEFINE_list("parts", ["train", "images", "runs"], "Parts to run: train, images, runs.")
flags.DEFINE_integer("run_pairs", 3, "Part 3: alternating rounds of whole training runs.")
flags.DEFINE_integer("run_steps", 4000, "Part 3: train steps of each run.")
flags.DEFINE_bool("quick", False, "A smoke run: few steps, a small image dataset.")
flags.DEFINE_string("out", os.path.join(_ROOT, "benchmarks", "results"), "Results directory.")
FLAGS = flags.FLAGS

IMAGE = 128
_SETTLE_SECONDS = 0.05


class _PerExampleDecode:
    """A TFDS data source seen only through ``__len__`` / ``__getitem__`` / ``__getitems__``:
    the pipeline then reads it as before the vectorised decoder (one batched ArrayRecord
    read, TFDS's decode of each example, then stacked)."""

    def __init__(self, source: Any):
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> Any:
        return self._source[i]

    def __getitems__(self, indices: Any) -> Any:
        return self._source.__getitems__(indices)


class _RawRecords:
    """The raw records of a TFDS ArrayRecord source, read as the pipeline reads a batch
    but never decoded: ``get_batch(indices)`` is array_record's batched read."""

    def __init__(self, source: Any):
        self._inner = source.data_source
        self.bytes_read = self.records_read = 0

    def __len__(self) -> int:
        return len(self._inner)

    def get_batch(self, indices: Any) -> Any:
        records = self._inner.__getitems__(list(map(int, indices)))
        self.bytes_read += sum(map(len, records))
        self.records_read += len(records)
        return records


class _OwnRawRecords(_RawRecords):
    """As :class:`_RawRecords`, read with the pipeline's own raw read
    (``pipeline.read_records``: a ``read(k, k + 1)`` per record, a kept thread pool)."""

    def __init__(self, source: Any):
        super().__init__(source)
        self._source = source

    def get_batch(self, indices: Any) -> Any:
        from ovaib_jax.data import pipeline

        return pipeline.read_records(self._source, list(map(int, indices)))


def _median_ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of num[i] / den[i] (pairs of adjacent chunks)."""
    ratios = [a / b for a, b in zip(num, den)]
    median = statistics.median(ratios)
    if len(ratios) < 2:
        return median, median, median
    q = statistics.quantiles(ratios, n=4)
    return median, q[0], q[2]


def _alternate(
    variants: dict[str, Any], rounds: int, warmup: int, chunk: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall seconds, CPU seconds of the whole process) of each chunk of
    ``variants[name](count)`` (runs ``count`` units), the variants alternating chunk by
    chunk, the order reversed every round. Each chunk is followed by an untimed pause, so
    that a variant's background threads (``device_prefetch``) refill their queue outside
    the next variant's timed chunk."""
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(-1, rounds):  # round -1: warm-up
        for name in names if r % 2 == 0 else names[::-1]:
            c0, t0 = time.process_time(), time.perf_counter()
            variants[name](warmup if r < 0 else chunk)
            if r >= 0:
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            time.sleep(_SETTLE_SECONDS)
    return wall, cpu


# ---- part 1: train steps/s, uncached vs cached ------------------------------------------


def inputs_targets(run) -> list[str]:
    return [t.name for t in run.resolved.spec.targets]


RANDOM_READ = "raw read, random keys (`read_records`: one `read(k, k + 1)` a record)"
BLOCK_READ = (
    "raw read, blocks of {block} consecutive keys (`shuffle_block={block}`: a `read` a block)"
)
POSITIONS_READ = (
    "raw read, random keys, one `reader.read(positions)` (array_record's `__getitems__`, before)"
)


def _batch_costs(source, batch_size: int, keys: list[str], block: int, batches: int = 40) -> dict:
    """Median (wall, CPU) seconds per batch of the raw reads (random keys; blocks of
    ``block`` consecutive keys; random keys read as before), the vectorised decode and
    TFDS's per-example decode of the same random batches."""
    import numpy as np

    from ovaib_jax.data import pipeline

    decoder = pipeline.record_decoder(source)
    rng = np.random.default_rng(0)
    n = len(source)
    index = [rng.choice(n, batch_size, replace=False) for _ in range(batches)]
    blocks = [
        pipeline.epoch_permutation(n, 0, epoch, block)[:batch_size] for epoch in range(batches)
    ]
    records = [pipeline.read_records(source, i.tolist()) for i in index[:4]]
    steps = {
        RANDOM_READ: lambda i: pipeline.read_records(source, index[i].tolist()),
        BLOCK_READ.format(block=block): lambda i: pipeline.read_records(source, blocks[i].tolist()),
        POSITIONS_READ: lambda i: source.data_source.__getitems__(index[i].tolist()),
        "vectorised decode (modalities and targets)": lambda i: decoder.decode(
            records[i % 4], keys
        ),
        "TFDS per-example decode, stacked (before)": lambda i: decoder.decode_tfds(
            records[i % 4], None
        ),
    }
    out = {}
    for name in steps:
        out[name] = ([], [])
    for i in range(batches):
        for name, step in steps.items() if i % 2 else reversed(steps.items()):
            c0, t0 = time.process_time(), time.perf_counter()
            step(i)
            out[name][0].append(time.perf_counter() - t0)
            out[name][1].append(time.process_time() - c0)
    return {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in out.items()}


def _train_part(config) -> list[str]:
    import jax

    from ovaib_jax import data, inputs, train

    config = copy.deepcopy(config)
    with config.unlocked():
        config.dataset.cache_max_mb = 512
    run = train.build(config, workdir=None)  # its train_iter: the split cached in memory
    uncached_config = copy.deepcopy(config)
    with uncached_config.unlocked():
        uncached_config.dataset.cache_max_mb = 0
    split, bs = config.dataset.train_split, config.batch_size
    uncached = inputs.create_data_iterator(
        uncached_config, split, batch_size=bs, train=True, spec=run.resolved.spec
    )
    source = data.make_source(config.dataset.name, split, build=False, **inputs.data_kwargs(config))
    before = data.make_iterator(
        _PerExampleDecode(source),
        batch_size=bs // jax.process_count(),
        seed=config.seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        prefetch=int(config.dataset.prefetch),
    )
    block_config = copy.deepcopy(uncached_config)
    with block_config.unlocked():
        block_config.dataset.shuffle_block = FLAGS.shuffle_block
    blocked = inputs.create_data_iterator(
        block_config, split, batch_size=bs, train=True, spec=run.resolved.spec
    )
    ahead = int(config.dataset.device_prefetch)
    state = run.state

    def timed(iterator):
        batches = inputs.device_batches(iterator, run.mesh, run.modality_names, ahead)

        def steps(count: int) -> None:
            nonlocal state
            for _ in range(count):
                state, metrics = run.train_step(state, next(batches))
            jax.block_until_ready((state, metrics))

        return steps, batches.close

    feeds = {
        "cached (`cache_max_mb=512`)": timed(run.train_iter),
        "uncached (`cache_max_mb=0`), vectorised decode": timed(uncached),
        "uncached, TFDS per-example decode (before)": timed(before),
        f"uncached, `shuffle_block={FLAGS.shuffle_block}`": timed(blocked),
    }
    n = FLAGS.chunk
    rounds = max(FLAGS.steps // n, 1)
    times, cpu = _alternate({k: v[0] for k, v in feeds.items()}, rounds, FLAGS.warmup, n)
    for _, close in feeds.values():
        close()
    names = list(feeds)
    rows = []
    for name in names:
        seconds, cpu_seconds = statistics.median(times[name]), statistics.median(cpu[name])
        rows.append(
            f"| {name} | {n / seconds:.1f} | {1000 * seconds / n:.2f} | "
            f"{1000 * cpu_seconds / n:.2f} |"
        )
    ratio, lo, hi = _median_ratio(times[names[0]], times[names[1]])
    old, old_lo, old_hi = _median_ratio(times[names[0]], times[names[2]])
    blk, blk_lo, blk_hi = _median_ratio(times[names[0]], times[names[3]])
    status = "PASS" if ratio >= 0.9 else "MISS"
    blk_status = "PASS" if blk >= 0.9 else "MISS"
    block = FLAGS.shuffle_block
    costs = _batch_costs(source, bs, [*run.modality_names, *inputs_targets(run)], block)
    decode_cpu = costs["vectorised decode (modalities and targets)"][1]
    input_cpu = costs[RANDOM_READ][1] + decode_cpu
    block_cpu = costs[BLOCK_READ.format(block=block)][1] + decode_cpu
    cached_cpu = statistics.median(cpu[names[0]]) / n
    return [
        "## 1. Default config: train steps/s without the cache",
        "",
        f"Config: {config.dataset.name} ({len(source)} train examples, objective "
        f"{config.objective.name}), global batch {bs}, `dataset.prefetch` "
        f"{config.dataset.prefetch}, `device_prefetch` {ahead}; {rounds} chunks of {n} steps "
        f"per variant after {FLAGS.warmup} warm-up steps each, the variants alternating by "
        "chunk; medians over the chunks.",
        "",
        "| input | steps/s | ms/step | CPU ms/step (all threads) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"* uncached / cached steps/s: **{ratio:.3f}** (quartiles {lo:.3f}-{hi:.3f}; target "
        f">= 0.9: {status})",
        f"* uncached with `--config.dataset.shuffle_block={block}` / cached: **{blk:.3f}** "
        f"(quartiles {blk_lo:.3f}-{blk_hi:.3f}; target >= 0.9: {blk_status})",
        f"* before (TFDS per-example decode) / cached: {old:.3f} (quartiles "
        f"{old_lo:.3f}-{old_hi:.3f})",
        "",
        f"Where an uncached batch of {bs} goes (the same random batches for each, alternating; "
        "medians; CPU counts every thread of the process):",
        "",
        "| per batch | ms | CPU ms |",
        "|---|---|---|",
        *[f"| {name} | {1000 * w:.3f} | {1000 * c:.3f} |" for name, (w, c) in costs.items()],
        "",
        f"* input CPU per uncached step: {1000 * input_cpu:.2f} ms (random read + decode; "
        f"{1000 * block_cpu:.2f} ms with blocks of {block}) against "
        f"{1000 * cached_cpu:.2f} ms of CPU per cached step. The `device_prefetch` thread "
        "reads while the step runs, so the input is hidden only when a core is free for "
        "it; with none, the two add up: uncached / cached >= "
        f"{cached_cpu / (cached_cpu + input_cpu):.2f} "
        f"({cached_cpu / (cached_cpu + block_cpu):.2f} with blocks; no overlap) and <= 1 "
        "(full overlap).",
        "",
    ]


# ---- part 3: whole training runs, uncached vs cached ------------------------------------


def _run_rate(workdir: str, overrides: list[str]) -> float:
    """Median steps/s of one ``python -m ovaib_jax.main`` run of the benchmark's config
    (its log intervals after the first, which holds the compilation)."""
    import json
    import subprocess

    flag = FLAGS["config"]
    command = [
        sys.executable, "-m", "ovaib_jax.main",
        f"--config={config_flags.get_config_filename(flag)}", f"--workdir={workdir}",
        *[f"--config.{k}={v}" for k, v in config_flags.get_override_values(flag).items()],
        f"--config.num_train_steps={FLAGS.run_steps}",
        f"--config.log_every_steps={max(FLAGS.run_steps // 20, 1)}",
        "--config.eval_every_steps=0", "--config.evaluators=", "--config.final_evaluators=",
        f"--config.checkpoint_every_steps={FLAGS.run_steps}", *overrides,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rates = [json.loads(line).get("train/steps_per_sec") for line in f]
    rates = [r for r in rates if r is not None][1:]
    return statistics.median(rates)


def _runs_part() -> list[str]:
    """The issue's own measurement: whole training runs of the config (``ovaib_jax.main``,
    the trainer's steps/s), cached and uncached alternating run by run."""
    variants = {
        "cached (`cache_max_mb=512`)": ["--config.dataset.cache_max_mb=512"],
        "uncached (`cache_max_mb=0`)": ["--config.dataset.cache_max_mb=0"],
        f"uncached, `shuffle_block={FLAGS.shuffle_block}`": [
            "--config.dataset.cache_max_mb=0",
            f"--config.dataset.shuffle_block={FLAGS.shuffle_block}",
        ],
    }
    names = list(variants)[:2] if FLAGS.quick else list(variants)  # a smoke run: the two
    rates: dict[str, list[float]] = {name: [] for name in names}
    root = tempfile.mkdtemp(prefix="ovaib_input_runs_")
    try:
        for r in range(FLAGS.run_pairs):
            for name in names if r % 2 == 0 else names[::-1]:
                workdir = os.path.join(root, f"{r}_{names.index(name)}")
                rates[name].append(_run_rate(workdir, variants[name]))
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [f"| {names[0]} | {' / '.join(f'{v:.0f}' for v in rates[names[0]])} | 1 |"]
    for name in names[1:]:
        ratios = [a / b for a, b in zip(rates[name], rates[names[0]])]
        rows.append(
            f"| {name} | {' / '.join(f'{v:.0f}' for v in rates[name])} | "
            f"{' / '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}) |"
        )
    return [
        "## 3. Whole training runs: the trainer's steps/s without the cache",
        "",
        "`python -m ovaib_jax.main` with the benchmark's `--config` (as part 1), "
        f"{FLAGS.run_steps} steps, no evaluation, one checkpoint at the end; the trainer's "
        "logged steps/s (median over its log intervals after the first); "
        f"{FLAGS.run_pairs} rounds, the variants alternating run by run (the order reversed "
        "every round).",
        "",
        f"| run | steps/s, round 1..{FLAGS.run_pairs} | / cached, each round |",
        "|---|---|---|",
        *rows,
        "",
    ]


# ---- part 2: a synthetic image dataset, pipeline vs raw ArrayRecord reads -------------


def _image_builder_class():
    """A vision_touch-like builder (defined on first use: TFDS registers builder classes
    by name)."""
    import numpy as np
    import tensorflow_datasets as tfds

    from ovaib_jax.data.base import SpecBuilder
    from ovaib_jax.data.spec import DatasetSpec, Modality, Target

    class InputBenchmarkImages(SpecBuilder):
        """Synthetic vision_touch-like examples (issue 15's input benchmark)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Benchmark fixture."}
        num_examples = 1500

        @classmethod
        def spec_for(cls, config):
            s = IMAGE
            return DatasetSpec(
                name="input_benchmark_images",
                modalities=(
                    Modality("rgb", (s, s, 3), "uint8", "resnet18"),
                    Modality("force", (32, 6), "float32", "cnn1d"),
                    Modality("depth", (s, s, 1), "float32", "resnet18"),
                ),
                targets=(
                    Target("contact", "classification", num_classes=2),
                    Target("ee_yaw_next", "regression", dim=4),
                ),
                splits=("train",),
                description="Synthetic vision_touch-like examples.",
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(self.num_examples)}

        def _generate_examples(self, n: int):
            # Smooth random waves plus pixel noise: pixels over the whole 0-255 range
            # (about half of them >= 128, two bytes each as TFDS stores uint8), and
            # records that compress partly, as camera frames do.
            rng = np.random.default_rng(0)
            yy, xx = np.mgrid[0:IMAGE, 0:IMAGE].astype(np.float32)
            for i in range(n):
                a, b, c = rng.uniform(0.02, 0.1, 3)
                wave = 127.5 + 100 * np.sin(a * xx + b * yy + c * i)
                rgb = np.stack([wave, np.roll(wave, 7, 0), np.roll(wave, 13, 1)], -1)
                rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
                depth = wave[..., None] / 255 + rng.normal(0, 0.01, (IMAGE, IMAGE, 1))
                yield (
                    i,
                    {
                        "rgb": rgb,
                        "force": rng.normal(size=(32, 6)).astype(np.float32),
                        "depth": depth.astype(np.float32),
                        "contact": int(rng.integers(2)),
                        "ee_yaw_next": rng.normal(size=4).astype(np.float32),
                    },
                )

    return InputBenchmarkImages


def _image_part(data_dir: str) -> list[str]:
    from ovaib_jax import data
    from ovaib_jax.data import pipeline

    cls = _image_builder_class()
    cls.num_examples = FLAGS.image_examples
    builder = cls(data_dir=data_dir)
    t0 = time.perf_counter()
    builder.download_and_prepare()
    build_seconds = time.perf_counter() - t0
    source = builder.as_data_source(split="train")
    files = len(source.data_source._read_instructions)
    decoder = pipeline.record_decoder(source)
    assert decoder is not None, "the vectorised decoder does not handle the image dataset"

    bs = FLAGS.image_batch
    raw = _RawRecords(source)
    kwargs = dict(batch_size=bs, seed=0)
    raw_ds = data.make_dataset(raw, **kwargs)
    raw_index = 0

    def read_raw(count: int) -> None:
        nonlocal raw_index
        for _ in range(count):
            raw_ds[raw_index]
            raw_index += 1

    def timed(iterator):
        def read(count: int) -> None:
            for _ in range(count):
                next(iterator)

        return read

    own_ds = data.make_dataset(_OwnRawRecords(source), **kwargs)
    own_index = 0

    def read_own(count: int) -> None:
        nonlocal own_index
        for _ in range(count):
            own_ds[own_index]
            own_index += 1

    variants = {
        "raw ArrayRecord reads (`ArrayRecordDataSource.__getitems__`, bytes only)": read_raw,
        "raw ArrayRecord reads as the pipeline does them (`read_records`, bytes only)": (read_own),
        "pipeline (`make_iterator`, `prefetch=0`: read and decode in the caller)": timed(
            data.make_iterator(source, prefetch=0, **kwargs)
        ),
        "pipeline, TFDS per-example decode (before), `prefetch=0`": timed(
            data.make_iterator(_PerExampleDecode(source), prefetch=0, **kwargs)
        ),
    }
    n = FLAGS.image_chunk
    rounds = max(FLAGS.image_batches // n, 1)
    times, cpu = _alternate(variants, rounds, 1, n)
    names = list(variants)
    record_bytes = raw.bytes_read / raw.records_read
    rows = []
    for name in names:
        seconds, cpu_seconds = statistics.median(times[name]), statistics.median(cpu[name])
        rate = n * bs / seconds
        rows.append(
            f"| {name} | {rate:.0f} | {rate * record_bytes / 1e6:.0f} | "
            f"{1e6 * cpu_seconds / (n * bs):.0f} |"
        )
    lines = [
        "## 2. Synthetic image dataset (vision_touch-like): pipeline vs raw reads",
        "",
        f"{FLAGS.image_examples} examples of {IMAGE} x {IMAGE} x 3 uint8 RGB + "
        f"{IMAGE} x {IMAGE} x 1 float32 depth + 32 x 6 float32 force + 2 targets, "
        f"{record_bytes / 1e3:.0f} kB per serialized record, {files} ArrayRecord files "
        f"(built in {build_seconds:.0f} s). Batches of {bs} shuffled examples; {rounds} "
        f"chunks of {n} batches per variant, alternating; medians over the chunks. "
        "MB/s counts serialized record bytes.",
        "",
        "| read | examples/s | MB/s | CPU us/example (all threads) |",
        "|---|---|---|---|",
        *rows,
        "",
        "Throughput ratios (median over pairs of adjacent chunks, quartiles), target >= 0.5:",
        "",
        "| pipeline | / array_record `__getitems__` | / the pipeline's raw reads |",
        "|---|---|---|",
    ]
    for name, label in zip(names[2:], ("`prefetch=0`", "before (TFDS decode)")):
        cells = []
        for raw_name in names[:2]:
            ratio, lo, hi = _median_ratio(times[raw_name], times[name])
            mark = f" {'PASS' if ratio >= 0.5 else 'MISS'}" if "before" not in label else ""
            cells.append(f"**{ratio:.3f}** ({lo:.3f}-{hi:.3f}){mark}")
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    per_example = {name: 1e6 * statistics.median(cpu[name]) / (n * bs) for name in names}
    lines += [
        "",
        f"* CPU per example: {per_example[names[1]]:.0f} us for the raw reads, "
        f"{per_example[names[2]]:.0f} us for the pipeline: the decode adds "
        f"{per_example[names[2]] - per_example[names[1]]:.0f} us (before: "
        f"{per_example[names[3]] - per_example[names[1]]:.0f} us), mostly the uint8 pixels, "
        "which TFDS stores as int64 varints (two bytes for each value >= 128).",
        "",
    ]
    return lines


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{platform.machine()} ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return platform.machine() or "unknown"


def main(argv):
    del argv
    import jax

    if FLAGS.quick:
        FLAGS.steps, FLAGS.chunk, FLAGS.warmup = 40, 10, 5
        FLAGS.image_examples, FLAGS.image_batch = 64, 16
        FLAGS.image_batches, FLAGS.image_chunk = 4, 2
        FLAGS.run_pairs, FLAGS.run_steps = 1, 40
    platform_name = jax.devices()[0].platform
    started = time.perf_counter()
    lines = [
        f"# Input pipeline benchmark ({platform_name}, {datetime.date.today().isoformat()})",
        "",
        f"Machine: {_cpu_name()}, {os.cpu_count()} CPU core(s), Python "
        f"{platform.python_version()}, jax {jax.__version__}. Ratios are "
        "measured side by side in one process (variants alternating), so other processes "
        "on the machine slow every variant alike; absolute rates depend on that load.",
        "",
    ]
    if "train" in FLAGS.parts:
        lines += _train_part(FLAGS.config)
    if "images" in FLAGS.parts:
        data_dir = FLAGS.image_data_dir or tempfile.mkdtemp(prefix="ovaib_input_benchmark_")
        try:
            lines += _image_part(data_dir)
        finally:
            if not FLAGS.image_data_dir:
                shutil.rmtree(data_dir, ignore_errors=True)
    if "runs" in FLAGS.parts:
        lines += _runs_part()
    lines.append(
        f"Load average at the end: {os.getloadavg()[0]:.1f}; total "
        f"{time.perf_counter() - started:.0f} s."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(FLAGS.out, exist_ok=True)
    path = os.path.join(
        FLAGS.out, f"input_benchmark_{datetime.date.today().isoformat()}_{platform_name}.md"
    )
    with open(path, "w") as f:
        f.write(text)
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
