"""ovaib-jax: One-vs-All Information Bottleneck for multi-modal contrastive alignment.

Layers (each imports only the ones above it in this list; docs/ARCHITECTURE.md):

* foundations: ``losses`` (pure objectives ``fn(z, *, ..., axis_name=None,
  chunk_size=None) -> (loss, aux)`` over ``z`` of shape ``(M, N, d)``, and retrieval
  scorers; jax alone), ``models`` (Flax encoders and the multi-modal model), ``data``
  (TFDS builders, grain pipeline), ``checkpointing``, ``host``, ``records`` (every file of
  a workdir);
* ``reporting`` (sweep tables, figures), ``state`` (train state, checkpoint layout);
* ``evaluators``: one protocol on embedded splits;
* ``configs`` (authoring, loading, recording), ``validation`` (checks before a run);
* ``runtime`` (mesh, model, global batches), ``inputs`` (data iterators),
  ``objective`` (the objective bound to the model);
* ``step`` (optimizer, train state, the jitted step), ``evaluation`` (evaluators on
  embedded splits);
* ``train`` (the loop); ``main``, ``evaluate``, ``sweep`` (command lines).
"""

__version__ = "0.1.0"
