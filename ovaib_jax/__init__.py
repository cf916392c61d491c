"""ovaib-jax: One-vs-All Information Bottleneck for multi-modal contrastive alignment.

Layout (dependencies only flow downwards in this list):

* ``ovaib_jax.losses``: pure objectives ``fn(z, *, ..., axis_name=None, chunk_size=None)
  -> (loss, aux)`` over embeddings ``z`` of shape ``(M, N, d)``, and retrieval scorers.
* ``ovaib_jax.data``: TFDS builders and the grain input pipeline (never imports models).
* ``ovaib_jax.models``: Flax encoders per modality and the multi-modal model.
* ``ovaib_jax.evaluators``: probes, retrieval, MI bounds and report tables on embedded
  splits (numpy arrays; no model).
* ``ovaib_jax.train`` / ``ovaib_jax.main`` / ``ovaib_jax.evaluate``: the only modules that
  join objectives, models and data.
* ``ovaib_jax.sweep``: every objective x seed of one experiment, and their report.
"""

__version__ = "0.1.0"
