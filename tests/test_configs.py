"""Every experiment config validates; each kind of bad config raises ONE clear ValueError."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest

from ovaib_jax import configs, losses

EXPERIMENTS = sorted(
    glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "*.py"))
)


def load(name: str, arg: str | None = None):
    path = os.path.join(os.path.dirname(__file__), "..", "experiments", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"exp_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_experiments_exist():
    names = {os.path.basename(p)[:-3] for p in EXPERIMENTS}
    assert {"default", "wesad", "vision_touch", "mosei", "mujoco_push", "mfeat"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: os.path.basename(p))
def test_every_experiment_validates(path):
    config = load(os.path.basename(path)[:-3])
    resolved = configs.validate_config(config, device_count=8, process_count=2)
    assert len(resolved.modalities) >= 2
    assert resolved.objective is losses.get(config.objective.name)
    # Every hyper-parameter in the config is one the objective takes.
    assert set(resolved.hparams) <= set(configs.objective_hparam_names(resolved.objective))


@pytest.mark.parametrize("name", losses.names())
def test_default_with_every_objective(name):
    config = load("default", f"objective={name}")
    assert config.objective.name == name
    resolved = configs.validate_config(config, device_count=1, process_count=1)
    assert resolved.normalize_embeddings == (name == "symile")
    if name == "symile":  # its "n" negatives need a fresh key every step
        assert resolved.takes_key


def test_paper_defaults_applied():
    config = load("wesad")
    assert (config.batch_size, config.objective.tau, config.objective.beta) == (64, 0.01, 0.5)
    assert config.model.embedding_dim == config.model.representation_dim == 256
    assert load("mosei").optimizer.learning_rate == 1e-5
    assert load("vision_touch", "variant=vfpdo").dataset.builder_config == "vfpdo"


def test_anchor_by_name_resolves_to_index():
    config = load("default")
    config.objective = configs.objective_config("anchor_clip", anchor="x2")
    assert configs.validate_config(config, device_count=1, process_count=1).hparams["anchor"] == 2


def _bad(mutate, match, device_count=1):
    config = load("default")
    with config.unlocked():
        mutate(config)
    with pytest.raises(ValueError, match=match):
        configs.validate_config(config, device_count=device_count, process_count=1)


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


def test_batch_not_divisible_by_devices():
    _bad(lambda c: setattr(c, "batch_size", 100), r"not divisible by the 8 devices.*96", 8)


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
