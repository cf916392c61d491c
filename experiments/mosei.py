"""CMU-MOSEI (MultiBench features): vision + audio + text sequences, LSTM encoders.

Paper setup with learning rate 1e-5. Config arguments ``objective=NAME`` and
``features=raw|senti``:

* ``raw`` (default): MultiBench's ``mosei_raw.pkl``, 713-d vision, the last 32 of its
  50 steps kept, i.e. SPEC section 6's shapes (visual x713, acoustic 32x74, text
  32x300; see the ``Mosei`` builder's docstring for the reading of its "35x713");
* ``senti``: MultiBench's ``mosei_senti_data.pkl``, 35-d FACET vision, all 50 steps.

Either way the labels are the same binary sentiment. Needs the chosen MultiBench file in
``--config.dataset.manual_dir``; the number of steps kept is
``--config.dataset.config.seq_len``.
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import paper_setup, parse_arg, sibling_config

# features -> (builder config, time steps kept)
FEATURES = {"raw": ("raw", 32), "senti": ("senti", 50)}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, objective="ova_ib", features="raw")
    if arg.features not in FEATURES:
        raise ValueError(
            f"Config argument features={arg.features}: expected one of {sorted(FEATURES)}."
        )
    builder_config, seq_len = FEATURES[arg.features]
    config = sibling_config(__file__, "default", f"objective={arg.objective}")
    config.dataset.name = "mosei"
    config.dataset.builder_config = builder_config
    config.dataset.config = ml_collections.ConfigDict({"seq_len": seq_len})
    config.dataset.eval_split = "valid"
    paper_setup(config, learning_rate=1e-5)
    config.num_train_steps = 50_000
    config.log_every_steps = 100
    config.eval_every_steps = 5_000
    config.checkpoint_every_steps = 5_000
    return config
