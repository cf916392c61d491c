"""Datasets for ovaib-jax: TFDS builders (ArrayRecord, no TensorFlow) and a grain pipeline.

Typical use::

    from ovaib_jax import data

    spec = data.get_spec("ovaib_parity", config="m3")      # no data needed
    src = data.make_source("ovaib_parity", "train", data_dir=d, config="m3")
    it = data.make_iterator(src, batch_size=64, seed=0)
    batch = next(it)            # {"x0": (64, 64), ..., "label": (64,), ...}
    state = it.get_state()      # JSON-serialisable; it.set_state(state) resumes exactly

Build from the command line: ``python -m ovaib_jax.data.build NAME``.
"""

from ovaib_jax.data.base import CorruptDataError, MissingDataError, SpecBuilder
from ovaib_jax.data.pipeline import (
    ArraySource,
    load_arrays,
    make_dataset,
    make_iterator,
    read_batch,
    stack_examples,
    steps_per_epoch,
)
from ovaib_jax.data.registry import (
    BUILDERS,
    builder_class,
    default_data_dir,
    get_builder,
    get_spec,
    is_built,
    make_source,
    names,
    prepare,
)
from ovaib_jax.data.spec import DatasetSpec, Modality, Target

__all__ = [
    "BUILDERS",
    "ArraySource",
    "CorruptDataError",
    "DatasetSpec",
    "MissingDataError",
    "Modality",
    "SpecBuilder",
    "Target",
    "builder_class",
    "default_data_dir",
    "get_builder",
    "get_spec",
    "is_built",
    "load_arrays",
    "make_dataset",
    "make_iterator",
    "make_source",
    "names",
    "prepare",
    "read_batch",
    "stack_examples",
    "steps_per_epoch",
]
