"""CMU-MOSEI (paper Table 1): vision + audio + text feature sequences -> binary sentiment.

    python -m ovaib_jax.sweep --config=experiments/paper/mosei.py \
        --objectives=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib \
        --seeds=42,0,1 --workdir=DIR --config.dataset.manual_dir=$HOME/data/mosei

Paper setup (SPEC section 5): Adam at learning rate 1e-5, batch 64, tau 0.01, dims 256,
3-layer heads, lam 1e-8, beta 1; LSTM encoders (``experiments/mosei.py``: by default
MultiBench's ``mosei_raw.pkl`` with SPEC section 6's shapes, 713-d vision and 32 steps;
``features=senti`` reads ``mosei_senti_data.pkl``). Final evaluation: the 4-layer MLP
probe of the binary sentiment ``label`` (accuracy), every modality subset, retrieval of
each modality from the others, MI bounds. Config arguments ``objective=NAME`` and
``features=raw|senti``. Needs the MultiBench feature file
(``--config.dataset.manual_dir``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """MOSEI; ``arg``: ``objective=NAME``, ``features=raw|senti``."""
    arg = parse_arg(arg, objective="ova_ib", features="raw")
    config = sibling_config(
        __file__, "../mosei", f"objective={arg.objective},features={arg.features}"
    )
    evaluation_setup(config, targets=("label",))
    return config
