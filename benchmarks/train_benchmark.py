"""Training throughput: the real input pipeline vs in-memory batches, and the objective's share.

    python benchmarks/train_benchmark.py [--config=experiments/default.py] [--steps=1000]
        [--config.batch_size=512 ...]

Measures, on the default config (or any other):

* steps/s and examples/s of the train step fed by the real grain pipeline (read, shuffle,
  batch, host-to-device), after a warm-up;
* the same steps fed from batches already in host memory (same host-to-device path and
  the same ``device_prefetch`` thread), and the ratio of the two (target >= 0.9: the
  pipeline keeps up). The two variants alternate every ``--chunk`` steps (alternating
  which goes first) and medians over the chunks are reported, so a change of the
  machine's load (other jobs on a shared CPU) hits both alike;
* the time of the objective alone (forward + backward, under the same shard_map, on
  embeddings of the step's shape) as a share of the step time;
* the whole training loop (``train.train_and_evaluate``: metrics summed on device,
  fetched only at log steps) with ``log_every_steps=1`` against ``100``: steps/s over
  the steps after the first 100 (compilation excluded), runs alternating.

Prints a table and writes ``benchmarks/results/train_benchmark_<date>_<platform>.md``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags
from ml_collections import config_flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

config_flags.DEFINE_config_file(
    "config",
    os.path.join(_ROOT, "experiments", "default.py"),
    "Experiment config.",
    lock_config=True,
)
flags.DEFINE_integer("steps", 1000, "Timed steps per variant.")
flags.DEFINE_integer("chunk", 25, "Steps per timed chunk (the variants alternate by chunk).")
flags.DEFINE_integer("warmup", 20, "Untimed steps of each variant before timing.")
flags.DEFINE_integer(
    "repeats", 3, "Measurements of the objective alone (their median is reported)."
)
flags.DEFINE_integer("loop_steps", 600, "Steps of each loop run (log_every_steps 1 vs 100).")
flags.DEFINE_integer("loop_repeats", 2, "Runs of each loop variant (alternating).")
flags.DEFINE_string("out", os.path.join(_ROOT, "benchmarks", "results"), "Results directory.")
FLAGS = flags.FLAGS


def _time_steps(run, state, batches, steps: int):
    """Runs ``steps`` steps on global batches from ``batches()``; returns (seconds, state)."""
    import jax

    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = run.train_step(state, batches())
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - t0, state


class _Replay:
    """Endless iterator over host batches already in memory (``get_state`` for Prefetcher)."""

    def __init__(self, batches: list):
        self.batches, self.i = batches, 0

    def __next__(self):
        self.i += 1
        return self.batches[(self.i - 1) % len(self.batches)]

    def get_state(self) -> dict:
        return {"i": self.i}


def time_feeds(run, chunk: int, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per chunk of ``chunk`` steps of ``run``'s train step fed by its real input
    pipeline (``run.train_iter``) and by batches of that pipeline replayed from host
    memory, alternating by chunk after ``warmup`` steps of each: {variant: [seconds]}.
    ``run.state`` is left as the state after the last step."""
    from ovaib_jax import inputs

    state = run.state
    it = run.train_iter
    n, w = chunk, warmup
    ahead = int(run.config.dataset.device_prefetch)

    def feed(iterator):
        """(next global batch, close) as the training loop gets them from ``iterator``:
        converted to device arrays ahead by a thread when ``device_prefetch`` > 0."""
        batches = inputs.device_batches(iterator, run.mesh, run.modality_names, ahead)
        return (lambda: next(batches)), batches.close

    # The same pipeline's batches, read once (before its feed starts reading ahead) and
    # replayed from host memory.
    replay = _Replay([next(it) for _ in range(max(n, 100))])
    feeds = {"real pipeline": feed(it), "in-memory batches": feed(replay)}
    times: dict[str, list[float]] = {name: [] for name in feeds}
    for r in range(-1, rounds):  # round -1: warm-up of both variants
        # Short interleaved chunks, alternating which variant goes first: a change of the
        # machine's load hits both variants alike.
        for name in sorted(feeds, reverse=r % 2 == 1):
            seconds, state = _time_steps(run, state, feeds[name][0], w if r < 0 else n)
            if r >= 0:
                times[name].append(seconds)
    for _, close in feeds.values():
        close()
    run.state = state
    return times


def _objective_time(run, steps: int) -> float:
    """Seconds per forward+backward of the objective alone on z of the step's shape."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    m = len(run.modality_names)
    z = jax.random.normal(
        jax.random.key(0), (m, run.config.batch_size, run.config.model.embedding_dim)
    )
    z = jax.device_put(z, NamedSharding(run.mesh, P(None, "data")))
    params = run.state.params
    key = jax.random.key(1)
    grad = jax.jit(jax.value_and_grad(lambda z, p: run.objective(z, p, key)[0], argnums=(0, 1)))
    out = grad(z, params)
    jax.block_until_ready(out)
    times = []
    for _ in range(FLAGS.repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = grad(z, params)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)  # as the step time it is compared with


def _loop_rate(config, log_every: int, steps: int) -> float:
    """Steps/s of the training loop after its first 100 steps, from metrics.jsonl."""
    import copy
    import json
    import tempfile

    from ovaib_jax import train

    config = copy.deepcopy(config)
    with config.unlocked():
        config.num_train_steps = steps
        config.log_every_steps = log_every
        config.checkpoint_every_steps = steps
        config.eval_every_steps = 0
        config.final_evaluators = ""
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            lines = [json.loads(x) for x in f if "train/steps_per_sec" in x]
    # The logged rate counts the whole loop (the lines' writing too) but the compilation,
    # checkpoints and evaluations (none here): its windows add up to the loop's wall time.
    seconds, done, last = 0.0, 0, 0
    for rec in lines:
        step, rate = rec["step"], rec["train/steps_per_sec"]
        if last >= 100:
            seconds += (step - last) / rate
            done += step - last
        last = step
    return done / seconds


def main(argv):
    del argv
    import jax

    from ovaib_jax import train

    if FLAGS.loop_steps <= 100:
        raise app.UsageError(
            f"--loop_steps={FLAGS.loop_steps}: the loop is timed after its first 100 steps; "
            "use more than 100."
        )
    config = FLAGS.config
    run = train.build(config, workdir=None)
    n, w = FLAGS.chunk, FLAGS.warmup
    ahead = int(config.dataset.device_prefetch)
    rounds = max(FLAGS.steps // FLAGS.chunk, 1)
    times = time_feeds(run, n, w, rounds)
    pipeline = statistics.median(times["real pipeline"])
    memory = statistics.median(times["in-memory batches"])
    ratios = [m / p for m, p in zip(times["in-memory batches"], times["real pipeline"])]
    objective = _objective_time(run, max(FLAGS.steps // 10, 10))

    loop: dict[int, list[float]] = {1: [], 100: []}
    for r in range(FLAGS.loop_repeats):
        for every in (1, 100) if r % 2 == 0 else (100, 1):
            loop[every].append(_loop_rate(config, every, FLAGS.loop_steps))
    loop_ratio = statistics.median(loop[1]) / statistics.median(loop[100])

    bs = config.batch_size
    rows = [
        ("real pipeline", n / pipeline, n * bs / pipeline, 1000 * pipeline / n),
        ("in-memory batches", n / memory, n * bs / memory, 1000 * memory / n),
    ]
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio] * 3
    share = objective / (memory / n)
    platform = jax.devices()[0].platform
    lines = [
        f"# Train step throughput ({platform}, {jax.device_count()} device(s))",
        "",
        f"Config: {config.dataset.name}, objective {config.objective.name}, global batch {bs}, "
        f"M = {len(run.modality_names)}, d = {config.model.embedding_dim}, device_prefetch "
        f"{ahead}; {rounds} chunks of {n} steps per variant, the variants alternating by "
        f"chunk, after {w} warm-up steps each; medians over the chunks. jax {jax.__version__}, "
        f"{os.cpu_count()} CPU core(s), load average {os.getloadavg()[0]:.1f} at the end "
        "(other processes on the machine slow both variants).",
        "",
        "| input | steps/s | examples/s | ms/step |",
        "|---|---|---|---|",
        *[f"| {name} | {s:.1f} | {e:.0f} | {ms:.2f} |" for name, s, e, ms in rows],
        "",
        f"* pipeline / in-memory throughput ratio: **{ratio:.3f}** (target >= 0.9; median "
        f"over pairs of adjacent chunks, quartiles {q[0]:.3f}-{q[2]:.3f})",
        f"* objective forward+backward alone (median of {FLAGS.repeats}): "
        f"{1000 * objective:.3f} ms/step, "
        f"**{100 * share:.1f}%** of the in-memory step time",
        f"* training loop, log_every_steps=1: {statistics.median(loop[1]):.1f} steps/s, "
        f"=100: {statistics.median(loop[100]):.1f} steps/s; ratio **{loop_ratio:.3f}** "
        f"({FLAGS.loop_repeats} alternating runs of {FLAGS.loop_steps} steps each, steps "
        "after the first 100; metrics are summed on device and fetched at log steps only)",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(FLAGS.out, exist_ok=True)
    path = os.path.join(FLAGS.out, f"train_benchmark_{time.strftime('%Y-%m-%d')}_{platform}.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
