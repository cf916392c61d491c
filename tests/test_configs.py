"""Every experiment config validates; each kind of bad config raises ONE clear ValueError."""

from __future__ import annotations

import glob
import os
import shlex

import ml_collections
import pytest

from ovaib_jax import configs, losses
from ovaib_jax.validation import validate_config

EXPERIMENTS_DIR = os.path.join(os.path.dirname(__file__), "..", "experiments")
# Every experiment file, subdirectories (experiments/paper/) included.
EXPERIMENTS = sorted(glob.glob(os.path.join(EXPERIMENTS_DIR, "**", "*.py"), recursive=True))


def _name(path: str) -> str:
    return os.path.relpath(path, EXPERIMENTS_DIR)[:-3]


def load(name: str, arg: str | None = None):
    return configs.load_experiment(os.path.join(EXPERIMENTS_DIR, f"{name}.py"), arg)


PAPER = {
    # name: (dataset builder config, learning rate, downstream targets, OVA-IB beta)
    "vfd_classification": ("vfd", 1e-4, ("contact",), 1.0),
    "vfd_regression": ("vfd", 1e-3, ("ee_yaw_next",), 1.0),
    "vfp": ("vfp", 1e-4, ("contact",), 1.0),
    "vfpd": ("vfpd", 1e-4, ("contact",), 1.0),
    "vfpdo": ("vfpdo", 1e-4, ("contact",), 1.0),
    "mujoco_push": ("", 1e-3, ("position",), 1.0),
    "mosei": ("raw", 1e-5, ("label",), 1.0),
    "wesad": ("", 1e-3, None, 0.5),
}


def test_experiments_exist():
    names = {_name(p) for p in EXPERIMENTS}
    offline = {"default", "parity", "latent", "mfeat", "mnist_views"}
    bases = {"wesad", "vision_touch", "mosei", "mujoco_push"}
    assert offline | bases | {f"paper/{n}" for n in PAPER} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=_name)
def test_every_experiment_validates(path):
    config = load(_name(path))
    resolved = validate_config(config, device_count=8, process_count=2)
    assert len(resolved.modalities) >= 2
    assert resolved.objective is losses.get(config.objective.name)
    # Every hyper-parameter in the config is one the objective takes.
    assert set(resolved.hparams) <= set(configs.objective_hparam_names(resolved.objective))


@pytest.mark.parametrize("name", losses.names())
def test_default_with_every_objective(name):
    config = load("default", f"objective={name}")
    assert config.objective.name == name
    resolved = validate_config(config, device_count=1, process_count=1)
    # Only Symile normalises in the model (its own setup, with a learnable logit scale):
    # the others normalise inside the objective.
    assert resolved.normalize_embeddings is (name == "symile")
    if name == "symile":  # its "n" negatives need a fresh key every step
        assert resolved.takes_key and resolved.temperature_param == "logit_scale"


def test_paper_defaults_applied():
    config = load("wesad")
    assert (config.batch_size, config.objective.tau, config.objective.beta) == (64, 0.01, 0.5)
    assert config.model.embedding_dim == config.model.representation_dim == 256
    assert load("mosei").optimizer.learning_rate == 1e-5
    assert load("vision_touch", "variant=vfpdo").dataset.builder_config == "vfpdo"


@pytest.mark.parametrize(
    ("arg", "shapes"),
    [
        # SPEC section 6: visual x713, acoustic 32x74, text 32x300 (the raw release)
        ("", {"vision": (32, 713), "audio": (32, 74), "text": (32, 300)}),
        ("features=senti", {"vision": (50, 35), "audio": (50, 74), "text": (50, 300)}),
    ],
)
def test_mosei_paper_config_has_the_spec_shapes(arg, shapes):
    from ovaib_jax import data

    config = load("paper/mosei", arg)
    spec = data.get_spec(config.dataset.name, **configs.dataset_kwargs(config))
    assert {m.name: tuple(m.shape) for m in spec.modalities} == shapes


def test_mosei_unknown_features_is_one_clear_error():
    with pytest.raises(ValueError, match=r"features=facet: expected one of \['raw', 'senti'\]"):
        load("mosei", "features=facet")


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs(name):
    """SPEC section 5: Adam, batch 64, tau 0.01, dims 256, 3-layer heads, lam 1e-8, seed
    42, the learning rate and beta of each task; the heavy evaluators once at the end."""
    builder_config, lr, targets, beta = PAPER[name]
    config = load(f"paper/{name}")
    assert config.dataset.builder_config == builder_config
    assert (config.optimizer.name, config.optimizer.learning_rate) == ("adam", lr)
    assert (config.seed, config.batch_size) == (42, 64)
    assert (config.objective.tau, config.objective.lam, config.objective.beta) == (0.01, 1e-8, beta)
    assert config.model.representation_dim == config.model.embedding_dim == 256
    assert config.model.head_layers == 3
    assert config.final_evaluators == "downstream,modality_subsets,retrieval,mi_bounds"
    assert config.evaluators == "heldout_loss,inbatch_retrieval"
    assert config.evaluator_kwargs.downstream.get("targets") == targets
    assert config.evaluator_kwargs.downstream.hidden == (256, 256, 256)  # the 4-layer MLP
    if name == "wesad":
        assert config.evaluator_kwargs.retrieval.pairs == ("resp+ecg->bvp",)
    # Every objective of the comparison takes the paper's shared setting too.
    symile = load(f"paper/{name}", "objective=symile")
    assert (symile.batch_size, symile.optimizer.learning_rate) == (64, lr)
    assert symile.objective.name == "symile"


def test_offline_config_arguments():
    config = load("parity", "M=5,k=1,p=0.5")
    assert (config.dataset.builder_config, config.dataset.config.M) == ("m5", 5)
    assert (config.dataset.config.k, config.dataset.config.p) == (1, 0.5)
    assert len(validate_config(config, device_count=1, process_count=1).modalities) == 5
    latent = load("latent", "M=4,beta=0.25")
    assert latent.objective.beta == 0.25 and latent.dataset.config.M == 4
    assert latent.evaluator_kwargs.downstream.per_modality_targets == ("nuisance",)
    assert load("latent", "objective=pairwise_clip_ib").objective.beta == 1.0  # its own default
    assert load("mnist_views").evaluator_kwargs.retrieval.relevance == "label"
    for name, arg in (("parity", "M=2"), ("latent", "M=6"), ("mnist_views", "M=4")):
        with pytest.raises(ValueError, match="M must be"):
            load(name, arg)


def test_evaluator_kwargs_are_checked():
    _bad(lambda c: setattr(c, "final_evaluators", "retrieval,probe9"), r"final_evaluators.*probe9")
    _bad(
        lambda c: setattr(c, "evaluator_kwargs", {"retrieval": {"top_k": 3}}),
        r"evaluator_kwargs.retrieval: .*unknown config key\(s\) \['top_k'\]",
    )
    _bad(lambda c: setattr(c, "evaluator_kwargs", {"retreival": {}}), r"'retreival'.*not an")


def test_anchor_by_name_resolves_to_index():
    config = load("default")
    config.objective = configs.objective_config("anchor_clip", anchor="x2")
    assert validate_config(config, device_count=1, process_count=1).hparams["anchor"] == 2


def _bad(mutate, match, device_count=1):
    config = load("default")
    with config.unlocked():
        mutate(config)
    with pytest.raises(ValueError, match=match):
        validate_config(config, device_count=device_count, process_count=1)


def test_unknown_objective():
    _bad(lambda c: setattr(c.objective, "name", "ova_lb"), r"not an objective.*ova_ib.*symile")


def test_typo_in_hyperparameter():
    _bad(lambda c: setattr(c.objective, "betta", 0.5), r"\['betta'\].*does not take.*beta")


def test_hyperparameter_of_another_objective():
    def mutate(c):
        c.objective.name = "pairwise_clip"  # keeps ova_ib's beta, lam, ...

    _bad(mutate, r"objective 'pairwise_clip' does not take.*objective=pairwise_clip")


def test_unknown_encoder():
    _bad(lambda c: setattr(c.model, "encoders", "x0=transformer"), r"Unknown encoder 'transformer'")


def test_encoder_override_for_missing_modality():
    _bad(lambda c: setattr(c.model, "encoders", "rgb=resnet18"), r"\['rgb'\].*\['x0', 'x1', 'x2'\]")


def test_unknown_encoder_field():
    _bad(lambda c: setattr(c.model.mlp, "widths", (3,)), r"model.mlp has \['widths'\]")


def test_unknown_dataset():
    _bad(lambda c: setattr(c.dataset, "name", "imagenet"), r"Unknown dataset 'imagenet'")


def test_unknown_modality_subset():
    _bad(lambda c: setattr(c.dataset, "modalities", "x0,x9"), r"\['x9'\] are not modalities")


def test_single_modality():
    _bad(lambda c: setattr(c.dataset, "modalities", "x1"), r"M >= 2")


def test_triangle_needs_three_modalities():
    def mutate(c):
        c.objective = configs.objective_config("triangle")
        c.dataset.config.M = 4
        c.dataset.builder_config = "m4"

    _bad(mutate, r"exactly 3 modalities; 4 are selected")


def test_shuffled_negatives_need_three_modalities():
    def mutate(c):
        c.objective.negatives = "shuffled"
        c.dataset.modalities = "x0,x2"

    _bad(mutate, r"negatives='shuffled' needs M >= 3 modalities; 2 are selected \(\['x0', 'x2'\]\)")
    config = load("default")
    with config.unlocked():
        config.objective.negatives = "shuffled"
    validate_config(config, device_count=1, process_count=1)  # M = 3: valid


def test_batch_not_divisible_by_devices():
    _bad(lambda c: setattr(c, "batch_size", 100), r"not divisible by the 8 devices.*96", 8)


def test_shuffle_block_is_a_positive_integer():
    for bad in (0, -4, None):
        _bad(
            lambda c, bad=bad: setattr(c.dataset, "shuffle_block", bad),
            r"config.dataset.shuffle_block must be an integer > 0",
        )


def test_branches_sum_to_d_and_split_z_where_the_heads_do():
    _bad(lambda c: setattr(c.model, "branches", "16,8"), r"sums to 24.*embedding_dim = 32")
    _bad(lambda c: setattr(c.model, "branches", "16,a"), r"comma-separated positive")
    heads = load("trifeature", "M=3,objective=ova_ib_heads")
    assert heads.model.embedding_dim == 32  # heads (16, 8, 8) at the default shares
    for spec in ("", "16,8,8"):
        with heads.unlocked():
            heads.model.branches = spec
        validate_config(heads, device_count=1, process_count=1)
    with heads.unlocked():
        heads.model.branches = "8,8,16"
    with pytest.raises(ValueError, match=r"widths \(16, 8, 8\).*branches = '16,8,8'"):
        validate_config(heads, device_count=1, process_count=1)
    with heads.unlocked():
        heads.objective.comm_share = 0.0
        heads.model.branches = "16,8,8"
    with pytest.raises(ValueError, match=r"branches = '24,8'"):
        validate_config(heads, device_count=1, process_count=1)
    validate_config(load("default"), device_count=1, process_count=1)  # "" by default


def test_learnable_temperature_bounds():
    def mutate(c):
        c.model.learnable_temperature = True
        c.model.min_temperature = 0.5  # above objective.tau

    _bad(mutate, r"initial temperature 0.1 is outside")


def test_unknown_evaluator_and_optimizer():
    _bad(lambda c: setattr(c, "evaluators", "heldout_loss,probe9"), r"'probe9'.*valid evaluators")
    _bad(lambda c: setattr(c.optimizer, "name", "lamb"), r"valid optimizers")
    _bad(lambda c: setattr(c.optimizer, "weight_decay", 0.1), r"optimizer.name=adamw")


def test_bad_projector_value():
    _bad(lambda c: setattr(c.objective, "projector", "linear"), r"projector='linear'")


def test_config_argument_errors():
    with pytest.raises(ValueError, match="valid arguments"):
        load("default", "objectve=symile")
    # A typo'd bool was silently False (runlocal=ture: the full 3000-step run).
    with pytest.raises(ValueError, match=r"runlocal=ture: expected runlocal alone or"):
        load("parity", "runlocal=ture")
    assert (
        load("parity", "runlocal=false").num_train_steps
        > load("parity", "runlocal").num_train_steps
    )
    with pytest.raises(ValueError, match="M=five: expected an integer"):
        load("parity", "M=five")


def test_evaluate_set_overrides_parse_as_the_replaced_type():
    config = configs.from_json(
        {
            "seed": 42,
            "final_evaluators": "downstream,retrieval",
            "optimizer": {"learning_rate": 1e-3, "name": "adam"},
            "async_checkpointing": True,
            "model": {"mlp": {"hidden": [128, 128]}, "normalize_embeddings": None},
            "evaluator_kwargs": {"downstream": {"max_epochs": 30}},
        }
    )
    configs.apply_overrides(
        config,
        [
            "seed=7",
            "final_evaluators=downstream",
            "optimizer.learning_rate=0.5",
            "async_checkpointing=false",
            "model.mlp.hidden=64,32",
            "model.normalize_embeddings=True",
            "evaluator_kwargs.downstream.max_epochs=3",
            "evaluator_kwargs.downstream.features=embedding",  # a key the old config lacks
        ],
    )
    assert config.seed == 7 and config.final_evaluators == "downstream"
    assert config.optimizer.learning_rate == 0.5 and config.async_checkpointing is False
    assert config.model.mlp.hidden == (64, 32) and config.model.normalize_embeddings is True
    assert config.evaluator_kwargs.downstream.max_epochs == 3
    assert config.evaluator_kwargs.downstream.features == "embedding"
    for bad, msg in [
        ("seed", "expects KEY=VALUE"),
        ("sed=1", "unknown key 'sed'"),
        ("optimiser.learning_rate=1", "no section 'optimiser'"),
        ("seed=abc", "cannot parse as int"),
        ("async_checkpointing=maybe", "cannot parse as bool"),
        ("model.mlp.depth=3", "unknown key 'depth'"),
        ("model=foo", r"model is a section; set its keys"),
    ]:
        with pytest.raises(ValueError, match=msg):
            configs.apply_overrides(config, [bad])


def test_evaluate_set_edge_values():
    """Found by a review: on a key that is None (or new), lowercase false was the string
    'false', which counts as True; a one-item tuple written (64) raised a TypeError; an
    evaluator key where the config has no section for that evaluator was refused (the
    example in evaluate's docstring, on most experiment files); a typed placeholder given
    another type raised a TypeError. Each is a value now, or one ValueError."""
    config = configs.from_json(
        {
            "model": {"projector_hidden": [128], "normalize_embeddings": None},
            "evaluator_kwargs": {"retrieval": {"ks": [1]}},
        }
    )
    configs.apply_overrides(
        config,
        [
            "model.normalize_embeddings=false",
            "model.projector_hidden=(64)",
            "evaluator_kwargs.retrieval.standardize=true",  # a key the old config lacks
            "evaluator_kwargs.downstream.features=embedding",  # a section it lacks
        ],
    )
    assert config.model.normalize_embeddings is False
    assert config.model.projector_hidden == (64,)
    assert config.evaluator_kwargs.retrieval.standardize is True
    assert config.evaluator_kwargs.downstream.features == "embedding"
    # The experiment files' own configs: a placeholder(bool) and an empty section.
    default = load("default")
    configs.apply_overrides(
        default,
        ["model.normalize_embeddings=true", "evaluator_kwargs.downstream.features=embedding"],
    )
    assert default.model.normalize_embeddings is True
    assert default.evaluator_kwargs.downstream.features == "embedding"
    with pytest.raises(ValueError, match=r"model\.normalize_embeddings=3"):
        configs.apply_overrides(default, ["model.normalize_embeddings=3"])


def test_a_config_recorded_before_a_field_existed_still_loads_and_resumes():
    """config.json of a run made before model.dtype existed: evaluate reads it with the
    value that run had, and a rerun with that value is the same run. (A field whose default
    is not how the old runs behaved, dataset.epoch_aligned, is a change until set back.)"""
    import json

    config = load("default")
    recorded = json.loads(configs.to_json(config))
    for key in configs.ADDED_FIELDS:
        *parents, leaf = key.split(".")
        node = recorded
        for p in parents:
            node = node[p]
        del node[leaf]
    assert configs.changed_keys(recorded, config) == ["dataset.epoch_aligned"]
    assert configs.run_changes(recorded, config) == {"dataset.epoch_aligned": (False, True)}
    config.dataset.epoch_aligned = False
    assert configs.changed_keys(recorded, config) == []
    restored = configs.from_json(recorded)
    assert restored.model.dtype == "float32" and restored.model.objective_dtype == "float32"
    validate_config(restored, device_count=1, process_count=1)
    config.model.dtype = "bfloat16"  # another value than the run had is a change
    assert configs.changed_keys(recorded, config) == ["model.dtype"]


def test_an_adamw_run_recorded_before_the_decay_mask_reads_as_decaying_everything(tmp_path):
    """Every adamw run before optimizer.weight_decay_mask decayed all parameters: its
    config.json reads as "all" (evaluate rebuilds that optimizer; a rerun with today's
    default "matrices" is another run), while a run without decay reads as the default
    (the mask changes nothing there, so it stays the same run)."""
    import json

    config = load("default")
    with config.unlocked():
        config.optimizer.name = "adamw"
        config.optimizer.weight_decay = 0.05
    recorded = json.loads(configs.to_json(config))
    del recorded["optimizer"]["weight_decay_mask"]
    assert configs.from_json(recorded).optimizer.weight_decay_mask == "all"
    assert configs.changed_keys(recorded, config) == ["optimizer.weight_decay_mask"]
    from ovaib_jax import workdir

    wd = tmp_path / "old_adamw_run"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(workdir.ResumeError, match=r"weight_decay_mask: 'all' -> 'matrices'") as e:
        workdir.check_resume(config, str(wd))
    assert "To continue this run, add --config.optimizer.weight_decay_mask=all." in str(e.value)
    config.optimizer.weight_decay_mask = "all"
    assert configs.changed_keys(recorded, config) == []
    recorded["optimizer"]["weight_decay"] = 0.0
    assert configs.from_json(recorded).optimizer.weight_decay_mask == "matrices"
    _bad(
        lambda c: setattr(c.optimizer, "weight_decay_mask", "kernels"),
        r"weight_decay_mask='kernels'; valid masks are \('all', 'matrices'\)",
    )


def test_a_run_recorded_by_an_earlier_release_is_the_same_run_today():
    """tests/fixtures holds the config.json that the release of commit fd0c915 recorded
    for a sweep run (trifeature M = 5, ConFu, seed 42). The same settings today must be
    the same run (a sweep skips it, a rerun resumes it): a field added since must be in
    configs.ADDED_FIELDS at the value the old runs had. (model.learnable_product_weight
    was added without it: every earlier run then counted as "another config".)"""
    import json

    name = "config_trifeature_m5_confu_fd0c915.json"
    path = os.path.join(os.path.dirname(__file__), "fixtures", name)
    with open(path) as f:
        recorded = json.load(f)
    config = load("trifeature", "M=5,objective=confu")
    with config.unlocked():
        config.seed = 42
        config.eval_every_steps = 300  # as the sweep that recorded it
    # Batches ran on across epochs then: today's default order is another run, and the
    # messages name the flag that continues it (scripts/results_sweeps.sh passes it).
    assert configs.changed_keys(recorded, config) == ["dataset.epoch_aligned"]
    changes = configs.run_changes(recorded, config)
    assert configs.continue_flags(changes) == "--config.dataset.epoch_aligned=False"
    config.dataset.epoch_aligned = False
    # (changed_keys counts a field absent from the record unless ADDED_FIELDS, or the
    # objective's signature for its hyper-parameters, gives the value the run had)
    assert configs.changed_keys(recorded, config) == []
    validate_config(configs.from_json(recorded), device_count=1, process_count=1)


def test_keep_checkpoints_is_a_count_or_0_for_all():
    """A negative value failed deep inside orbax; 0 (which orbax would take as "delete
    every checkpoint as soon as it is written") and None keep every checkpoint: None
    cannot be given on the command line, 0 can."""
    _bad(
        lambda c: setattr(c, "keep_checkpoints", -1),
        r"config.keep_checkpoints must be an integer >= 0",
    )
    for every in (None, 0):
        config = load("default")
        with config.unlocked():
            config.keep_checkpoints = every
        validate_config(config, device_count=1, process_count=1)


def test_head_layers_is_a_positive_integer():
    """head_layers=0 (or -2) built a one-layer linear head without a word."""
    for bad in (0, -2):
        _bad(lambda c, bad=bad: setattr(c.model, "head_layers", bad), r"model\.head_layers")


def test_evaluator_settings_naming_a_missing_modality_stop_the_run_at_start():
    """A typo'd modality in a retrieval pair or a probe's modalities was found by the
    final evaluation, after the whole training run."""
    for key, value, match in (
        ("retrieval", {"pairs": ("x0->x9",)}, r"Unknown modality 'x9'"),
        ("downstream", {"modalities": ("x0", "x7")}, r"modalities \['x7'\] are not the run's"),
        ("modality_subsets", {"modalities": ("y",)}, r"modalities \['y'\] are not the run's"),
    ):
        config = load("parity", "runlocal")
        with config.unlocked():
            config.evaluator_kwargs[key] = value
        with pytest.raises(ValueError, match=rf"evaluator_kwargs\.{key}: .*{match}"):
            validate_config(config, device_count=1, process_count=1)
    config = load("parity", "runlocal")
    with config.unlocked():
        config.evaluator_kwargs.retrieval = {"pairs": ("x0+x1->x2",)}
    validate_config(config, device_count=1, process_count=1)


def test_encoder_settings_of_the_wrong_type_are_config_errors():
    """Widths given as a string or 1.5, a kernel of 0, an unknown activation: each failed
    inside flax when the model was built (a TypeError or ZeroDivisionError traceback)."""
    for mutate, match in (
        (lambda c: setattr(c.model.mlp, "hidden", ("abc",)), r"model\.mlp\.hidden=\('abc',\)"),
        (lambda c: setattr(c.model.mlp, "hidden", (32, 1.5)), r"model\.mlp\.hidden=\(32, 1\.5\)"),
        (lambda c: setattr(c.model.mlp, "act", "relux"), r"Unknown activation 'relux'"),
        (lambda c: setattr(c.model, "projector_hidden", ("abc",)), r"projector_hidden"),
    ):
        _bad(mutate, match)
    config = load("default")
    with config.unlocked():
        config.model.encoders = "x0=cnn1d"
        config.model.cnn1d.kernel_size = 0
    with pytest.raises(ValueError, match=r"model\.cnn1d\.kernel_size=0 must be an integer >= 1"):
        validate_config(config, device_count=1, process_count=1)


def test_continue_flags_are_shell_quoted():
    """A recorded string with a space or a quote was written bare: pasted into a shell,
    the flag split in two."""
    changes = {
        "dataset.modalities": ("x0, x2", "x0,x1,x2"),
        "model.encoders": ("x0='mlp'", ""),
        "seed": (3, 4),
    }
    flags = configs.continue_flags(changes)
    assert flags == (
        "'--config.dataset.modalities=x0, x2' '--config.model.encoders=x0='\"'\"'mlp'\"'\"''"
        " --config.seed=3"
    )
    assert shlex.split(flags) == [
        "--config.dataset.modalities=x0, x2",
        "--config.model.encoders=x0='mlp'",
        "--config.seed=3",
    ]
    # A value it cannot write (a tuple) leaves the whole command unsaid.
    assert configs.continue_flags({**changes, "model.mlp.hidden": ((16,), (32,))}) == ""


def test_all_evaluator_names_keeps_the_order_once_each():
    config = ml_collections.ConfigDict(
        {"evaluators": "heldout_loss, retrieval", "final_evaluators": "downstream,retrieval,"}
    )
    assert configs.all_evaluator_names(config) == ["heldout_loss", "retrieval", "downstream"]
    config.evaluators = ""
    config.final_evaluators = ""
    assert configs.all_evaluator_names(config) == []
