"""The trainer: one real step for every config, sharded == unsharded, the loop end to end,
evaluation from a checkpoint, non-finite losses.

The test process has 8 fake CPU devices (tests/conftest.py): every step here runs its
objective inside shard_map over 8 devices and is compared with an unsharded computation.
"""

from __future__ import annotations

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ovaib_jax import configs, data, evaluate, inputs, losses, models, runtime, train
from ovaib_jax.objective import loss_kwargs, make_objective
from ovaib_jax.state import abstract_items, open_checkpointer
from ovaib_jax.state import variables as flax_variables
from ovaib_jax.step import create_optimizer, create_train_state, make_train_step
from ovaib_jax.validation import validate_config
from tests.losses import reference as ref
from tests.train_helpers import ROOT, synthetic_batch, tiny_config

EXPERIMENTS = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def reference_loss(run, variables, batch, step: int):
    """The objective computed without shard_map on the model's outputs (train mode)."""
    return jax.jit(lambda v, b: _reference_loss(run, v, b, step))(variables, batch)


def _reference_loss(run, variables, batch, step: int):
    (z, _), _ = run.model.apply(variables, batch, train=True, mutable=["batch_stats"])
    kwargs = dict(run.resolved.hparams)
    params = variables["params"]
    if run.resolved.temperature_param:
        tau = run.model.apply({"params": params}, method=models.MultiModalModel.temperature)
        kwargs[run.resolved.temperature_param] = (
            tau if run.resolved.temperature_param == "tau" else 1 / tau
        )
    if run.resolved.projector:
        kwargs["projector"] = lambda rest, m: run.model.apply(
            {"params": params}, rest, m, method=models.MultiModalModel.project
        )
    if run.resolved.takes_key:
        kwargs["key"] = jax.random.fold_in(run.rng, step)
    return run.resolved.objective(z, **kwargs)


def _restored_with_test_batch(config, workdir: str, data_dir: str):
    """(run, the latest checkpoint's model variables, the first 64 test examples)."""
    kw = configs.dataset_kwargs(config)
    src = data.make_source("ovaib_parity", "test", data_dir=data_dir, build=False, **kw)
    batch = {k: np.stack([src[i][k] for i in range(64)]) for k in ("x0", "x1", "x2")}
    restored = open_checkpointer(workdir, read_only=True)
    run = train.build(config, with_data=False)
    variables = restored.restore(abstract_items(run.state), with_data=False).trees["model"]
    restored.close()
    return run, variables, batch


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_one_real_step_every_config(name):
    """Each config builds and takes one step; its loss equals the unsharded objective."""
    config = tiny_config(name=name)
    run = train.build(config, with_data=False)
    assert jax.device_count() == 8 and run.mesh.shape["data"] == 8
    local = synthetic_batch(run.resolved.modalities, config.batch_size)
    batch = runtime.global_batch(local, run.mesh)
    variables = jax.tree.map(np.asarray, run.state.variables())  # before donation
    want_loss, want_aux = reference_loss(run, variables, local, 0)
    state, metrics = run.train_step(run.state, batch)
    assert int(state.step) == 1
    np.testing.assert_allclose(metrics["loss"], want_loss, rtol=2e-5, atol=1e-6)
    for k, v in want_aux.items():
        np.testing.assert_allclose(metrics[k], v, rtol=1e-4, atol=1e-5, err_msg=k)
    assert np.isfinite(metrics["grad_norm"]) and float(metrics["grad_norm"]) > 0
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a) - b))), state.params, variables["params"]
    )
    assert max(jax.tree.leaves(moved)) > 0
    if name == "default":
        # The update is optax Adam on the gradient of the unsharded loss.
        params = variables["params"]
        grads = jax.jit(jax.grad(lambda p: _reference_loss(run, {"params": p}, local, 0)[0]))(
            params
        )
        tx = optax.adam(config.optimizer.learning_rate)
        want = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-7)


def _run_steps(config, mesh, batches):
    resolved = validate_config(config, device_count=mesh.size, process_count=1)
    model = runtime.create_model(config, resolved)
    tx, _ = create_optimizer(config.optimizer, config.num_train_steps)
    init_rng, rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(model, tx, resolved.modalities, init_rng, mesh)
    step = make_train_step(model, tx, make_objective(resolved, model, mesh), rng, mesh)
    losses_ = []
    for b in batches:
        state, metrics = step(state, runtime.global_batch(b, mesh))
        losses_.append(float(metrics["loss"]))
    return jax.tree.map(np.asarray, (state.params, state.batch_stats)), losses_


def test_eight_devices_equal_one_device():
    """Same batches on a 1-device and an 8-device mesh: same losses and parameters.

    Uses ResNet-18 (BatchNorm: global-batch statistics must not depend on the sharding),
    a small CNN and an MLP on 28x28 images.
    """
    config = tiny_config(
        name="default",
        **{"model.encoders": "view0=resnet18,view2=mlp", "optimizer.learning_rate": 0.01},
    )
    config.dataset.name = "mnist_views"
    config.dataset.config = type(config.dataset.config)()
    modalities = data.get_spec("mnist_views", config="m3").modalities
    batches = [synthetic_batch(modalities, 16, seed=s) for s in range(3)]
    one, loss1 = _run_steps(config, runtime.create_mesh(jax.devices()[:1]), batches)
    eight, loss8 = _run_steps(config, runtime.create_mesh(jax.devices()), batches)
    np.testing.assert_allclose(loss8, loss1, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_train_evaluate_and_resume(data_dir, tmp_path, monkeypatch):
    """The loop writes config.json, metrics.jsonl, TensorBoard and checkpoints; evaluate
    restores the model and its loss equals the objective on the first eval batch; a second
    call resumes from the last checkpoint. Each of them prepares the dataset once (a
    barrier on multi-host; training prepared it twice and every evaluation again)."""
    prepared = []
    prepare = inputs.prepare_dataset
    monkeypatch.setattr(inputs, "prepare_dataset", lambda c: prepared.append(1) or prepare(c))
    workdir = str(tmp_path / "run")
    config = tiny_config(data_dir, eval_every_steps=3, eval_num_batches=2)
    config.final_evaluators = "heldout_loss"
    out = train.train_and_evaluate(config, workdir)
    assert out["step"] == 6 and not out["preempted"]
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    # Two periodic evaluations and the final one ran, with one prepare in all.
    assert [x["step"] for x in lines if "eval/inbatch_retrieval/top1" in x] == [3, 6]
    assert [x["step"] for x in lines if "final/heldout_loss/loss" in x] == [6]
    assert len(prepared) == 1
    train_lines = [x for x in lines if "train/loss" in x]
    assert [x["step"] for x in train_lines] == [2, 3, 4, 6]  # log steps and checkpoint 3
    for key in (
        "train/accuracy",
        "train/learning_rate",
        "train/steps_per_sec",
        "train/examples_per_sec",
        "train/grad_norm",
        "train/sufficiency",
    ):
        assert key in train_lines[-1], key
    assert any("eval/inbatch_retrieval/top1" in x for x in lines)
    assert json.load(open(os.path.join(workdir, "config.json")))["batch_size"] == 16
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]

    # evaluate: one batch = the whole 64-example test split. The held-out loss is computed
    # again by hand; in-batch retrieval must agree with the split-level retrieval of the
    # ovaib_jax.evaluators package (same scorer, ties counted the same way: both default
    # to ties against the true candidate).
    config.eval_num_batches = 1
    config.eval_batch_size = 64
    config.evaluators = "heldout_loss,inbatch_retrieval,retrieval"
    results = evaluate.evaluate_checkpoint(config, workdir)
    assert results["step"] == 6 and len(prepared) == 2
    saved = json.load(open(os.path.join(workdir, "eval", "results.json")))
    assert saved["heldout_loss"]["loss"] == pytest.approx(results["heldout_loss"]["loss"])
    run, variables, first = _restored_with_test_batch(config, workdir, data_dir)
    z, _ = run.model.apply(flax_variables(variables["params"], variables["batch_stats"]), first)
    want, _ = losses.get("ova_ib")(z, **run.resolved.hparams)
    assert results["heldout_loss"]["loss"] == pytest.approx(float(want), rel=1e-5)
    inbatch, split = results["inbatch_retrieval"], results["retrieval"]
    assert inbatch["x0/top1"] == pytest.approx(split["x1+x2->x0/R@1"])
    assert inbatch["x2/top5"] == pytest.approx(split["x0+x1->x2/R@5"])
    assert inbatch["top5"] == pytest.approx(split["R@5"])

    # --out: a diagnostic evaluation writes only its file, the run's results stay.
    saved = os.path.join(workdir, "eval", "results.json")
    before = open(saved).read()
    config.evaluators = "heldout_loss"
    out_file = str(tmp_path / "diagnostic" / "results.json")
    again = evaluate.evaluate_checkpoint(config, workdir, out=out_file)
    assert open(saved).read() == before
    assert sorted(os.listdir(os.path.join(workdir, "eval"))) == [
        "results.json",
        "results_step_6.json",
    ]
    assert json.load(open(out_file)) == json.loads(json.dumps(again))
    assert again["heldout_loss"]["loss"] == pytest.approx(float(want), rel=1e-5)

    # Resume: 4 more steps start from step 6.
    config.num_train_steps = 10
    out = train.train_and_evaluate(config, workdir)
    assert out["step"] == 10 and len(prepared) == 4
    steps = [json.loads(x)["step"] for x in open(os.path.join(workdir, "metrics.jsonl"))]
    # train at 8, 9 (checkpoint, eval), 10 (eval, final evaluation)
    assert [s for s in steps if s > 6] == [8, 9, 9, 10, 10, 10]


def test_heads_on_separate_encoder_branches_train_and_evaluate(data_dir, tmp_path):
    """ova_ib_heads with one encoder branch per head (model.branches): trains, checkpoints
    the branches' parameters, and evaluate restores them: its held-out loss is the
    objective on the restored model's z, and the probes read the branches' 3 x 16-wide
    representations."""
    workdir = str(tmp_path / "run")
    config = tiny_config(data_dir, arg="objective=ova_ib_heads", num_train_steps=2)
    config.checkpoint_every_steps = 2
    config.model.branches = "4,2,2"  # span, product and comm heads of d = 8
    train.train_and_evaluate(config, workdir)
    config.eval_num_batches = 1
    config.eval_batch_size = 64
    config.evaluators = "heldout_loss,downstream"
    results = evaluate.evaluate_checkpoint(config, workdir)
    run, variables, first = _restored_with_test_batch(config, workdir, data_dir)
    assert {k for k in variables["params"] if k.startswith("encoder_x0")} == {
        "encoder_x0_b0",
        "encoder_x0_b1",
        "encoder_x0_b2",
    }
    z, reps = run.model.apply(flax_variables(variables["params"], variables["batch_stats"]), first)
    assert z.shape == (3, 64, 8) and reps["x0"].shape == (64, 48)
    kwargs = loss_kwargs(config, run.resolved, run.model, variables)  # with the model's fuse
    want, _ = jax.jit(lambda z: losses.get("ova_ib_heads")(z, **kwargs))(z)  # one compile
    assert results["heldout_loss"]["loss"] == pytest.approx(float(want), rel=1e-5)
    assert 0.0 <= results["downstream"]["label/accuracy"] <= 1.0


def test_steps_per_sec_leaves_out_evaluations_checkpoints_and_compilation(
    data_dir, tmp_path, monkeypatch
):
    """The logged steps/s counts the training loop's time only: an evaluation and a
    checkpoint between two log lines were charged to the next window, and the first
    window held the first step's compilation. The trainer's clock is a fake one that only
    the evaluation and the first step's call move (by 100 s each), so the windows of steps
    1-6 and 7-12 take no time unless those are counted in them (6 steps / 100 s = 0.06
    steps/s on the old code). Writing a train line is the loop's own time (10 s here):
    it was left out, so log_every_steps=1 looked as fast as 100."""
    import dataclasses
    import time

    class Clock:
        now = 0.0

        def perf_counter(self):
            return self.now

        def __getattr__(self, name):  # everything else as the time module
            return getattr(time, name)

    clock = Clock()
    real = train._evaluate

    def slow(*args, **kwargs):
        clock.now += 100.0
        return real(*args, **kwargs)

    real_build = train.build

    def build(*args, **kwargs):  # the first call of the step compiles it: 100 s
        run = real_build(*args, **kwargs)
        step, calls = run.train_step, []

        def first_call_slow(*a):
            clock.now += 0.0 if calls else 100.0
            calls.append(1)
            return step(*a)

        return dataclasses.replace(run, train_step=first_call_slow)

    real_write = train.records.MetricWriter.write

    def slow_write(self, step, scalars):
        clock.now += 10.0 if "train/loss" in scalars else 0.0
        return real_write(self, step, scalars)

    monkeypatch.setattr(train.records.MetricWriter, "write", slow_write)
    monkeypatch.setattr(train, "time", clock)
    monkeypatch.setattr(train, "_evaluate", slow)
    monkeypatch.setattr(train, "build", build)
    workdir = str(tmp_path / "rate")
    config = tiny_config(
        data_dir, num_train_steps=12, log_every_steps=6, eval_every_steps=6,
        checkpoint_every_steps=6,
    )  # fmt: skip
    train.train_and_evaluate(config, workdir)
    lines = [json.loads(x) for x in open(os.path.join(workdir, "metrics.jsonl"))]
    rate = [x["train/steps_per_sec"] for x in lines if x["step"] in (6, 12) and "train/loss" in x]
    # Step 6's window: nothing counted (the compilation left out); step 12's: the line
    # of step 6, 10 s, and neither the evaluation nor the checkpoint.
    assert len(rate) == 2 and rate[0] > 1.0 and rate[1] == pytest.approx(0.6), rate


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    workdir = str(tmp_path / "nan")
    config = tiny_config(
        data_dir,
        checkpoint_every_steps=1,
        **{"optimizer.name": "sgd", "optimizer.learning_rate": 1e30},
    )
    # Step 1's update already explodes the parameters (its loss, computed before the
    # update, is finite): they are not saved, and nothing claims a good checkpoint.
    with pytest.raises(FloatingPointError, match=r"at step 1 .*No checkpoint was saved yet"):
        train.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == []


def test_an_invalid_config_is_not_recorded_as_the_run(data_dir, tmp_path):
    """config.json is the record of what the workdir trains; a config that fails
    validation must not leave one (a corrected rerun would be refused as another run)."""
    workdir = str(tmp_path / "bad")
    config = tiny_config(data_dir)
    config.objective.taux = 0.1  # a typo'd key
    with pytest.raises(ValueError, match="taux"):
        train.train_and_evaluate(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))


def _toy_source(n=40):
    rng = np.random.default_rng(0)
    return [
        {"a": rng.standard_normal(3).astype(np.float32), "label": np.int64(i)} for i in range(n)
    ]


def test_in_memory_source_matches_source():
    src = _toy_source()
    cached = inputs.InMemorySource(src, chunk=7)
    assert len(cached) == len(src)
    for i in (0, 6, 7, 39):
        assert set(cached[i]) == {"a", "label"}
        np.testing.assert_array_equal(cached[i]["a"], src[i]["a"])
        assert cached[i]["label"] == src[i]["label"]
    assert set(inputs.InMemorySource(src, keys=["a"])[3]) == {"a"}


@pytest.mark.parametrize("warmup", [0, 3])
def test_warmup_schedules_start_alike(warmup):
    """Both warmup schedules ramp linearly from 0 over warmup_steps and start at the full
    rate without warmup (warmup_constant with 0 steps gave the first update rate 0)."""
    import ml_collections

    lr = 0.5
    for name in ("warmup_constant", "warmup_cosine"):
        opt = ml_collections.ConfigDict(
            {"name": "sgd", "momentum": 0.0, "learning_rate": lr, "schedule": name,
             "warmup_steps": warmup, "grad_clip_norm": 0.0, "weight_decay": 0.0}
        )  # fmt: skip
        _, schedule = create_optimizer(opt, 100)
        want = [lr * min(s / warmup, 1.0) if warmup else lr for s in range(5)]
        got = [float(schedule(s)) for s in range(5)]
        if name == "warmup_cosine":  # the cosine decay after the warmup: at most lr
            assert got[: warmup + 1] == pytest.approx(want[: warmup + 1]), name
            assert all(g <= lr for g in got)
        else:
            assert got == pytest.approx(want), name


def test_prefetcher_state_is_that_of_the_consumed_batches():
    """Batches come out in order and get_state() resumes right after the last one handed
    out, however many the thread has prepared ahead."""
    src = _toy_source()
    plain = data.make_iterator(src, batch_size=4, seed=1, prefetch=0)
    want = [next(plain)["label"] for _ in range(12)]
    pre = inputs.Prefetcher(data.make_iterator(src, batch_size=4, seed=1, prefetch=0), dict, 3)
    got = [next(pre)["label"] for _ in range(5)]
    state = pre.get_state()
    pre.close()
    for a, b in zip(got, want[:5]):
        np.testing.assert_array_equal(a, b)
    resumed = data.make_iterator(src, batch_size=4, seed=1, prefetch=0)
    resumed.set_state(state)
    for b in want[5:]:
        np.testing.assert_array_equal(next(resumed)["label"], b)
    # End of data and errors surface in the consumer.
    finite = inputs.Prefetcher(data.make_iterator(src, batch_size=8, seed=0, num_epochs=1), dict)
    assert len(list(finite)) == 5

    def boom(_):
        raise RuntimeError("bad batch")

    failing = inputs.Prefetcher(data.make_iterator(src, batch_size=8, seed=0), boom)
    with pytest.raises(RuntimeError, match="bad batch"):
        next(failing)
    # A second next raises it again (it waited forever on the empty queue): called in a
    # daemon thread, so that a regression fails here instead of hanging the suite.
    import threading

    second: list = []
    caller = threading.Thread(target=lambda: second.append(_raised(next, failing)), daemon=True)
    caller.start()
    caller.join(timeout=30)
    failing.close()
    assert second and isinstance(second[0], RuntimeError), "a second next did not raise"


def _raised(fn, *args):
    """The exception ``fn(*args)`` raises (None if it returns)."""
    try:
        fn(*args)
    except Exception as e:
        return e
    return None


@pytest.mark.parametrize("projector", ["mlp", "product", "span+product"])
def test_retrieval_of_a_projector_run_uses_the_projector(data_dir, tmp_path, projector):
    """A run trained with an OVA projector (or the span + product score) is evaluated
    with its training score, in-batch, over the split and in the MI bounds; checked
    against the score computed by hand."""
    workdir = str(tmp_path / projector)
    config = tiny_config(data_dir, num_train_steps=2, checkpoint_every_steps=2)
    if projector == "span+product":
        config.objective.product_weight = 0.5
    else:
        config.objective.projector = projector
    train.train_and_evaluate(config, workdir)
    config.eval_num_batches = 1
    config.eval_batch_size = 64
    config.evaluators = "inbatch_retrieval,retrieval,mi_bounds"
    config.evaluator_kwargs = {
        "mi_bounds": {"batch_size": 64, "max_batches": 1, "shuffle": False},
    }
    results = evaluate.evaluate_checkpoint(config, workdir)

    run, variables, batch = _restored_with_test_batch(config, workdir, data_dir)
    params = variables["params"]
    z, _ = run.model.apply(flax_variables(params, variables["batch_stats"]), batch)
    z = np.asarray(z, np.float64)
    for m in range(3):
        rest = np.delete(z, m, axis=0)
        if projector == "span+product":  # (tuples, candidates of modality m)
            scores = np.array(
                [[ref.ova_score_pair(c, rest[:, i], 1e-8, 0.5) for c in z[m]] for i in range(64)]
            )
        else:
            if projector == "product":
                pred = rest[0] * rest[1]
            else:
                pred = np.asarray(
                    run.model.apply(
                        {"params": params},
                        jnp.asarray(rest, jnp.float32),
                        m,
                        method=models.MultiModalModel.project,
                    ),
                    np.float64,
                )
            pred /= np.linalg.norm(pred, axis=1, keepdims=True)
            scores = pred @ (z[m] / np.linalg.norm(z[m], axis=1, keepdims=True)).T
        higher = np.sum(scores > np.diag(scores)[:, None] + 1e-6, axis=1)  # (no exact ties)
        name = f"x{m}"
        pair = "+".join(f"x{i}" for i in range(3) if i != m) + f"->{name}"
        top1 = np.mean(higher == 0)
        assert results["inbatch_retrieval"][f"{name}/top1"] == pytest.approx(top1, abs=1 / 64)
        assert results["retrieval"][f"{pair}/R@1"] == pytest.approx(top1, abs=1 / 64)
        mean_rank = 1 + np.mean(higher)
        assert results["retrieval"][f"{pair}/mean_rank"] == pytest.approx(mean_rank, abs=0.1)
        # mi_bounds scores the objective as trained: the projector and the run's tau
        # (not ova_ib's default 0.01). L_m: retrieve each tuple's projection from z_m.
        bound = np.log(64) - ref._ce_rows(scores.T / config.objective.tau)
        assert results["mi_bounds"][f"mi_bound/m{m}"] == pytest.approx(bound, abs=1e-3)


def test_evaluation_embeds_every_test_example(tmp_path):
    """The eval split (64 examples) in batches of 24: 24 + 24 + 16, the last one padded
    and its padding dropped; retrieval ranks all 64 candidates, in split order. The data
    directory is fresh: evaluation builds the dataset, as training does (it had read the
    split's size first and failed with 'not built')."""
    data_dir = str(tmp_path / "data")
    config = tiny_config(data_dir, eval_batch_size=24)
    run = train.build(config, with_data=False)
    emb = run.evaluation([]).embed(run.state.variables(), config.dataset.eval_split)
    assert emb.num_examples == 64
    kw = configs.dataset_kwargs(config)
    src = data.make_source("ovaib_parity", "test", data_dir=data_dir, build=False, **kw)
    labels = np.array([src[i]["label"] for i in range(64)])
    np.testing.assert_array_equal(emb.targets["label"], labels)
    batch = {k: np.stack([src[i][k] for i in range(64)]) for k in ("x0", "x1", "x2")}
    z, _ = run.model.apply(run.state.variables(), batch)
    np.testing.assert_allclose(emb.z, np.asarray(z), rtol=1e-5, atol=1e-6)


def test_a_process_with_no_rows_of_a_small_eval_split_yields_padding(data_dir, monkeypatch):
    """Two processes, an eval batch of 256 over a 64-example split: process 1's share is
    empty, yet it yields the same one batch as process 0, all padding, of the same shapes
    (it raised "has 64 examples, fewer than 2", which holds no sense with 64 > 2)."""
    config = tiny_config(data_dir)
    resolved = validate_config(config, device_count=1, process_count=1)
    data.prepare(config.dataset.name, **inputs.data_kwargs(config))
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr("jax.experimental.multihost_utils.sync_global_devices", lambda _: None)
    shares = {}
    for p in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda p=p: p)
        shares[p] = list(inputs.eval_batches(config, "test", batch_size=256, spec=resolved.spec))
    assert [len(s) for s in shares.values()] == [1, 1]
    (first,), (empty,) = shares[0], shares[1]
    assert int(first[inputs.VALID].sum()) == 64 and not empty[inputs.VALID].any()
    assert {k: (v.shape, v.dtype) for k, v in empty.items()} == {
        k: (v.shape, v.dtype) for k, v in first.items()
    }
    assert all(not np.any(v) for v in empty.values())


@pytest.mark.parametrize("mask", ["matrices", "all"])
def test_weight_decay_mask_leaves_biases_and_scalars_alone(mask):
    """adamw's decoupled decay with zero gradients moves p to (1 - lr * wd) p: with the
    default "matrices" mask only the kernel (ndim >= 2) moves, not the bias, a norm scale
    or the learnable log temperature; with "all" every parameter does (optax's default,
    what every adamw run did before the mask existed)."""
    import ml_collections

    opt = ml_collections.ConfigDict(
        {"name": "adamw", "learning_rate": 0.5, "schedule": "constant", "warmup_steps": 0,
         "grad_clip_norm": 0.0, "weight_decay": 0.1, "weight_decay_mask": mask,
         "b1": 0.9, "b2": 0.999, "eps": 1e-8}
    )  # fmt: skip
    tx, _ = create_optimizer(opt, 10)
    params = {
        "Dense_0": {"kernel": jnp.full((3, 2), 2.0), "bias": jnp.full((2,), 2.0)},
        "LayerNorm_0": {"scale": jnp.full((2,), 2.0)},
        "log_temperature": jnp.asarray(2.0),
    }
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    decayed = 2.0 * (1 - 0.5 * 0.1)
    want_small = decayed if mask == "all" else 2.0
    np.testing.assert_allclose(new["Dense_0"]["kernel"], decayed, rtol=1e-6)
    np.testing.assert_allclose(new["Dense_0"]["bias"], want_small, rtol=1e-6)
    np.testing.assert_allclose(new["LayerNorm_0"]["scale"], want_small, rtol=1e-6)
    np.testing.assert_allclose(new["log_temperature"], want_small, rtol=1e-6)
