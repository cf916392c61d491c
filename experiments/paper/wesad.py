"""WESAD (paper Table 1 and the retrieval table): chest Resp + chest ECG + wrist BVP ->
3-class affect; Resp + ECG -> BVP retrieval.

    python -m ovaib_jax.sweep --config=experiments/paper/wesad.py \
        --objectives=ova_ib,symile,gram,triangle,pairwise_clip,pairwise_clip_ib \
        --seeds=42,0,1 --workdir=DIR --config.dataset.manual_dir=$HOME/data/WESAD

Paper setup (SPEC section 5): Adam, batch 64, tau 0.01, dims 256, 3-layer heads, lam
1e-8, beta 0.5 (the paper's for WESAD); 1D-CNN encoders (``experiments/wesad.py``; the
paper gives no learning rate for WESAD: 1e-3). Final evaluation: the 4-layer MLP probe
of ``label`` (accuracy), every modality subset, zero-shot retrieval Resp + ECG -> BVP
(R@1/5/10, mAP: the paper's 3-seed mAP table) and MI bounds. Config argument
``objective=NAME``. Needs the raw WESAD files (``--config.dataset.manual_dir``).
"""

from __future__ import annotations

import ml_collections

from ovaib_jax.configs import evaluation_setup, parse_arg, sibling_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """WESAD; ``arg``: ``objective=NAME``."""
    arg = parse_arg(arg, objective="ova_ib")
    config = sibling_config(__file__, "../wesad", f"objective={arg.objective}")
    evaluation_setup(config, retrieval={"pairs": ("resp+ecg->bvp",)})
    return config
