"""Default experiment: OVA-IB on the offline parity benchmark, small MLPs, any CPU.

    python -m ovaib_jax.main --config=experiments/default.py --workdir=/tmp/ovaib_default

About 1-2 minutes on a 2-core laptop CPU; the parity data (SPEC section 8: the last of
M = 3 modalities is the XOR of the others) is generated locally on first use, nothing
is downloaded. Config arguments (big_vision style, ``--config=experiments/default.py:ARGS``):

* ``objective=NAME``: any objective of ``ovaib_jax.losses`` with its own
  hyper-parameters and defaults (``ova_ib``, ``pairwise_clip``, ``symile``, ``gram``, ...);
* ``runlocal``: a few seconds' smoke run (tiny data, 20 steps).

Every other experiment file imports this one and overrides a few fields.
"""

from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder

from ovaib_jax.configs import objective_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The default config; ``arg`` as in the module docstring."""
    arg = parse_arg(arg, objective="ova_ib", runlocal=False)
    config = ml_collections.ConfigDict()

    config.seed = 42  # PRNG seed of initialisation, data order and per-step keys (paper: 42)
    config.batch_size = 128  # GLOBAL batch (all devices of all hosts); divisible by devices
    config.eval_batch_size = 0  # global eval batch (0: same as batch_size)
    config.num_train_steps = 1500  # optimizer updates
    config.log_every_steps = 50  # train metrics to metrics.jsonl / TensorBoard (and at checkpoints)
    config.eval_every_steps = 500  # run config.evaluators on the eval split (0: never)
    config.eval_num_batches = 0  # eval batches per evaluation (0: the whole eval split)
    config.checkpoint_every_steps = 500  # also saved at the last step and on SIGTERM
    config.keep_checkpoints = 3  # most recent checkpoints kept (0 or None: all)
    config.async_checkpointing = True  # write checkpoints in a background thread
    # Comma-separated evaluator names: heldout_loss, inbatch_retrieval (ovaib_jax.evaluate)
    # and those of ovaib_jax.evaluators (downstream, modality_subsets, retrieval, mi_bounds).
    config.evaluators = "heldout_loss,inbatch_retrieval"
    # Evaluators run ONCE, after the last step (the heavy ones: downstream,
    # modality_subsets, retrieval, mi_bounds); with `evaluators` they make results.json.
    config.final_evaluators = ""
    # Config keys of each evaluator, e.g. {"retrieval": {"pairs": ("x0+x1->x2",)}}.
    config.evaluator_kwargs = ml_collections.ConfigDict()

    # Objective: `name` plus exactly the hyper-parameters that objective takes (checked
    # against its signature at start). For ova_ib: tau (temperature; 0.01 in the paper),
    # beta (weight of the minimality term; 1, 0.5 on WESAD), lam (ridge of the
    # projection; 1e-8), exclude_positive (the paper's literal denominator),
    # normalize_minimality (L2-normalise before L_M), projector ("none"; "mlp": the
    # learnable MLP projector ablation; "product": the parameter-free sign-aware
    # product of the remaining embeddings, an extension), product_weight (w >= 0: the
    # projection score plus w cos(z_m, prod z_-m), an extension; 0 = the paper's score).
    # chunk_size: candidates per block of the blocked (memory-bounded) form, 0 = unblocked.
    config.objective = objective_config(arg.objective)
    if arg.objective.startswith("ova_ib"):  # ova_ib, ova_ib_comm, ova_ib_heads
        # SPEC section 8: at tau = 0.1 and beta = 0 OVA-IB solves small parity problems;
        # the paper's tau = 0.01 / beta = 1 learn much more slowly on this benchmark.
        config.objective.tau = 0.1
        config.objective.beta = 0.0

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "ovaib_parity"  # a name of ovaib_jax.data.names()
    config.dataset.builder_config = "m3"  # builder config name ("" = the dataset's default)
    config.dataset.config = ml_collections.ConfigDict(  # builder config fields to override
        {
            "M": 3,  # modalities
            "k": 2,  # bits per modality
            "p": 1.0,  # probability that the last modality is the XOR of the others
            "num_train": 20_000,  # training examples
            "num_test": 4_096,  # test examples
        }
    )
    config.dataset.modalities = ""  # comma-separated subset, in z's order ("" = all)
    config.dataset.train_split = "train"  # split (or TFDS slice, "train[:90%]") to train on
    config.dataset.eval_split = "test"  # split the evaluators read
    # Where datasets are built ("" = $OVAIB_DATA_DIR or ~/tensorflow_datasets).
    config.dataset.data_dir = ""
    config.dataset.manual_dir = ""  # raw files of a manual dataset (the paper's datasets)
    # Batches prepared ahead by background threads (0: synchronous; on few cores threads
    # contend with the step for the GIL and the CPU: measure with benchmarks/).
    config.dataset.prefetch = 0
    # Batches converted to device arrays ahead of the step by one background thread (0: off).
    config.dataset.device_prefetch = 2
    # Decode a split into host memory once when it is at most this large (0: never).
    config.dataset.cache_max_mb = 512
    # Training order: 1 shuffles every example alone; B > 1 shuffles blocks of B
    # consecutive records, which a split read from its record files (larger than the cache)
    # reads in runs, for less CPU than random reads (see data.make_iterator; examples
    # stored next to each other then share batches).
    config.dataset.shuffle_block = 1
    # Every training batch inside one epoch: each epoch leaves out the last (dataset size
    # mod global batch) examples of its shuffled order, and no batch holds an example twice.
    # False: batches run on across epochs (every example every epoch; the batch at an
    # epoch boundary may hold an example twice, a positive that is also a negative).
    config.dataset.epoch_aligned = True

    config.model = ml_collections.ConfigDict()
    # Per-modality encoder override, e.g. "x0=mlp,x1=cnn1d" ("" = the dataset's suggestion).
    config.model.encoders = ""
    config.model.representation_dim = 64  # encoder output r (256 in the paper)
    config.model.embedding_dim = 32  # projection output d (256 in the paper)
    config.model.head_layers = 3  # Dense layers of each projection head (3 in the paper)
    config.model.head_hidden = 0  # hidden width of the heads (0 = representation_dim)
    config.model.normalize_embeddings = placeholder(bool)  # L2-normalise z in the model (None: no)
    config.model.learnable_temperature = False  # learn log tau in the model, from objective.tau
    config.model.min_temperature = 0.001  # clip of a learnable tau
    config.model.max_temperature = 10.0  # upper clip of a learnable tau
    # Learn the weight w of OVA's span + product score (ova_ib, ova_sufficiency,
    # ova_ib_comm) as exp of a model parameter, from objective.product_weight (> 0).
    config.model.learnable_product_weight = False
    config.model.projector_hidden = (128,)  # hidden widths of the MLP projector ablation
    # Separate encoder branches: comma-separated embedding widths summing to embedding_dim
    # ("" = one encoder and head per modality). Branch k has its own encoder and head per
    # modality and writes its slice of z; the probes read the branches' representations
    # concatenated. With objective ova_ib_heads, give its head widths (span, product, comm:
    # the widths the error message names) to put each head on its own encoder.
    config.model.branches = ""
    # Mixed precision (flax / big_vision convention): the dtype the encoders, heads and
    # projector compute in, "float32" or "bfloat16"; parameters, gradients, optimizer
    # state and BatchNorm statistics stay float32 whatever it is. uint8 pixels are scaled
    # to [0, 1] in float32, then cast to it. float32 is bit-identical to a model without it.
    config.model.dtype = "float32"
    # The dtype of what the model hands the objective: z (cast before the optional L2
    # normalisation), the MLP projector's output and a learned temperature. A model field,
    # as it is the dtype of the model's output: not under config.objective (whose keys are
    # the objective's hyper-parameters, checked against its signature) nor at the top level
    # (the run's schedule). float32: the logsumexp over N candidates and OVA-IB's
    # Gram-Schmidt lose accuracy in bfloat16. ovaib_jax.losses computes in float32 whatever
    # it gets, so "bfloat16" only rounds those inputs, never the loss's arithmetic.
    # Measured with dtype="bfloat16" (same parameters and batch, N = 128): z moves by a
    # relative 4e-3 to 7e-3 (8 significant bits) and the loss by at most 2.3e-3 for every
    # objective, on the trained default model and on default-size encoders of every family
    # at initialisation; up to 1.4e-2 for gram on the tiny test models (d = 8). Tolerances:
    # tests/test_mixed_precision.py.
    config.model.objective_dtype = "float32"
    config.model.mlp = ml_collections.ConfigDict(
        {"hidden": (128, 128), "act": "leaky_relu"}  # the paper's MLP encoder uses LeakyReLU
    )
    config.model.cnn1d = ml_collections.ConfigDict(  # channels per block, temporal kernel/stride
        {"features": (32, 64, 128), "kernel_size": 5, "strides": 2, "act": "relu"}
    )
    config.model.resnet18 = ml_collections.ConfigDict(
        {"width": 64, "stage_sizes": (2, 2, 2, 2), "input_channels": 0}  # 0: channels as stored
    )
    config.model.lstm = ml_collections.ConfigDict({"hidden": 128, "num_layers": 1})  # last state
    config.model.small_cnn = ml_collections.ConfigDict({"features": (32, 64), "act": "relu"})  # 3x3

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"  # adam | adamw | sgd
    config.optimizer.learning_rate = 1e-3  # peak learning rate
    config.optimizer.schedule = "constant"  # constant | cosine | warmup_cosine | warmup_constant
    config.optimizer.warmup_steps = 0  # linear warmup of the warmup_* schedules
    config.optimizer.weight_decay = 0.0  # decoupled weight decay (adamw only)
    # what it decays: "matrices" (kernels and tables: not biases, norm scales, the
    # temperature or product weight) | "all"
    config.optimizer.weight_decay_mask = "matrices"
    config.optimizer.grad_clip_norm = 0.0  # clip the global gradient norm (0: off)
    config.optimizer.b1 = 0.9  # Adam beta1
    config.optimizer.b2 = 0.999  # Adam beta2
    config.optimizer.eps = 1e-8  # Adam epsilon
    config.optimizer.momentum = 0.0  # SGD momentum (0: none)

    # Multi-host: jax.distributed.initialize() runs when `initialize` is True (cluster
    # auto-detection: TPU pods, SLURM, ...), when coordinator_address is set, or when the
    # environment sets JAX_COORDINATOR_ADDRESS.
    config.distributed = ml_collections.ConfigDict()
    config.distributed.initialize = False  # True on TPU pods / SLURM (auto-detection)
    config.distributed.coordinator_address = ""  # "host:port" of process 0
    config.distributed.num_processes = 0  # 0: auto-detected
    config.distributed.process_id = -1  # -1: auto-detected

    if arg.objective == "symile":
        # Symile's own setup, stable at every M: L2-normalised embeddings (the multilinear
        # inner product of M of them then lies in [-1, 1]) and a learnable logit scale,
        # initialised as CLIP's 1 / 0.07 and capped at 100 (tau >= 0.01). Unnormalised
        # embeddings at logit_scale = 1 (this file's default before) sat at log N on
        # WESAD-like inputs at M = 3 and diverged at M = 5 (gradient norms near 10^3).
        config.model.normalize_embeddings = True
        config.model.learnable_temperature = True
        config.model.min_temperature = 0.01
        config.objective.logit_scale = 1 / 0.07

    if arg.runlocal:
        config.num_train_steps = 20
        config.log_every_steps = 5
        config.eval_every_steps = 20
        config.checkpoint_every_steps = 10
        config.batch_size = 64
        config.dataset.config.num_train = 1024
        config.dataset.config.num_test = 256
    return config
