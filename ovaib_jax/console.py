"""What the command-line programs show: progress, the end-of-run summary, short errors.

* :class:`Progress`: the training loop's progress. On a terminal a tqdm bar; off a
  terminal (nohup, SLURM, a log file) one log line every ``every`` steps (step/total,
  loss, steps/s, ETA), through the ``ovaib_jax`` logger.
* :func:`summary_table`: the final metrics of a run as a short text table, with the
  chance level (or the bound) of each metric where it is known.
* :func:`install_log_filters`: drops the noise of libraries, nothing else: the one line
  ``Unable to initialize backend 'tpu'`` of every CPU start, and the ``Event loop is
  closed`` traceback each of orbax's still-running background writes prints when a
  checkpoint save fails (a full disk), which would bury the one error that says so.
* :func:`parse_flags` (``app.run(main, flags_parser=...)``) and
  :func:`unknown_key_message`: a mistyped ``--config.KEY`` (or a key the objective does
  not take) is one line with the closest valid key, and exit status 2, not a traceback.
"""

from __future__ import annotations

import difflib
import logging
import math
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TextIO

import ml_collections

from ovaib_jax import configs, losses

__all__ = [
    "USAGE_ERROR",
    "ConfigError",
    "Progress",
    "closest_key",
    "config_keys",
    "exit_with",
    "format_duration",
    "install_log_filters",
    "parse_flags",
    "short_flag_error",
    "summary_table",
    "unknown_key_message",
]

log = logging.getLogger(__name__)

USAGE_ERROR = 2  # exit status of a bad command line or config (a user error, not a crash)


class ConfigError(ValueError):
    """A config the run cannot take, found after ``validate_config`` (e.g. a batch larger
    than its split, once the dataset is built): the programs show its message alone and
    exit with :data:`USAGE_ERROR`."""


# ----------------------------------------------------------------------------- progress


def format_duration(seconds: float | None) -> str:
    """``"45s"``, ``"3m 05s"``, ``"1h 02m"``, ``"2d 03h"``; ``"?"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(float(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """The progress of the training loop, on a terminal or off one.

    On a terminal (``stream.isatty()``) it is a tqdm bar (``total`` steps, starting at
    ``initial``, the last loss as its postfix). Off a terminal it logs one line through
    the ``ovaib_jax`` logger every ``every`` steps and at the last step (``every = 0``:
    at every :meth:`update` that carries scalars):
    ``step 500/1500 (33%) | loss 3.912 | 41.2 steps/s | ETA 24s``.

    Args:
      total: the last step.
      initial: the step the loop starts from (a resumed run).
      enabled: False shows nothing (processes other than 0).
      every: steps between two lines off a terminal (``config.log_every_steps``).
      stream: where the bar goes, and whose ``isatty()`` decides (default stderr).
      clock: seconds, for the rate when the scalars carry none.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        enabled: bool = True,
        *,
        every: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.total, self.every, self.enabled = int(total), int(every), bool(enabled)
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.scalars: dict[str, float] = {}
        self.bar = None
        self._mark = (int(initial), clock())
        if self.enabled and _isatty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=int(initial), unit="step",
                            dynamic_ncols=True, file=self.stream)  # fmt: skip

    def update(self, step: int, scalars: Mapping[str, float] | None = None) -> None:
        """The loop reached ``step``; ``scalars``: the train scalars just logged
        (``"train/loss"``, ``"train/steps_per_sec"``, ...), None between log steps."""
        if not self.enabled:
            return
        if scalars:
            self.scalars = dict(scalars)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if scalars and "train/loss" in scalars:
                self.bar.set_postfix(loss=f"{scalars['train/loss']:.4g}")
            return
        due = step % self.every == 0 if self.every else scalars is not None
        if due or step == self.total:
            log.info("%s", self.line(step))

    def line(self, step: int) -> str:
        """The line logged off a terminal at ``step``."""
        now = self.clock()
        rate = self.scalars.get("train/steps_per_sec")
        if rate is None or not rate > 0:
            last_step, last_time = self._mark
            rate = (step - last_step) / (now - last_time) if now > last_time else None
        self._mark = (step, now)
        parts = [f"step {step}/{self.total} ({100.0 * step / max(self.total, 1):.0f}%)"]
        if "train/loss" in self.scalars:
            parts.append(f"loss {self.scalars['train/loss']:.4g}")
        if rate:
            parts.append(f"{rate:.3g} steps/s")
            parts.append(f"ETA {format_duration((self.total - step) / rate)}")
        return " | ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- summary


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ratio(k: int, n: int) -> str:
    return f"{min(k / n, 1.0):.4g} ({k}/{n})"


def _log_bound(n: int) -> str:
    return f"max {math.log(n):.4g} (log {n})"


def _mean_row(name: str, metrics: Mapping[str, Any], prefix: str, n: int) -> list[tuple]:
    """One row: the mean of the ``prefix*`` MI bounds (at most log n)."""
    vals = [v for k, v in metrics.items() if k.startswith(prefix) and _num(v)]
    if not vals:
        return []
    return [(f"{name} (mean of {len(vals)})", sum(vals) / len(vals), _log_bound(n))]


def _evaluator_rows(
    name: str, metrics: Mapping[str, Any], n: int, num_classes: Mapping[str, int]
) -> list[tuple[str, float, str]]:
    """The headline rows of one evaluator's results: (metric, value, chance)."""
    rows: list[tuple[str, float, str]] = []
    items = [(k, v) for k, v in metrics.items() if _num(v)]
    if name == "heldout_loss":  # the training objective on eval batches of n
        for k, v in items:
            if k == "loss":
                rows.append((f"{name}/loss", v, ""))
            elif k.startswith("accuracy") and "/" not in k:
                rows.append((f"{name}/{k}", v, _ratio(1, n)))
        rows += _mean_row(f"{name}/mi_bound", metrics, "mi_bound/", n)
    elif name == "inbatch_retrieval":
        for k, v in items:
            if k.startswith("top") and k[3:].isdigit():
                rows.append((f"{name}/{k}", v, _ratio(int(k[3:]), n)))
    elif name == "mi_bounds":
        b = int(metrics.get("batch_size") or n)
        for k in ("mi_bound/mean", "ova_mi_bound/mean"):
            if _num(metrics.get(k)):
                rows.append((f"{name}/{k}", metrics[k], _log_bound(b)))
    elif name == "retrieval":  # over the whole split: num_candidates candidates
        c = metrics.get("num_candidates")
        for k, v in items:
            if k.startswith("R@") and k[2:].isdigit():
                chance = metrics.get(f"chance/{k}")  # label relevance: not k / N
                if _num(chance):
                    rows.append((f"{name}/{k}", v, f"{chance:.4g}"))
                else:
                    rows.append((f"{name}/{k}", v, _ratio(int(k[2:]), int(c)) if c else ""))
            elif k in ("mAP", "median_rank"):
                rows.append((f"{name}/{k}", v, ""))
    elif name in ("downstream", "modality_subsets"):
        parts = {k: k.split("/") for k, _ in items}
        if name == "modality_subsets":  # the row of all modalities only
            widest = max((p[0].count("+") for p in parts.values()), default=0)
            parts = {k: p[1:] for k, p in parts.items() if p[0].count("+") == widest}
        for k, v in items:
            p = [x for x in parts.get(k, [None]) if x != "embedding"]
            if len(p) == 2 and p[1] == "accuracy":
                c = num_classes.get(p[0])
                rows.append((f"{name}/{k}", v, _ratio(1, int(c)) if c else ""))
            elif len(p) in (2, 3) and p[-1] == "r2" and (len(p) == 2 or p[1] == "mean"):
                rows.append((f"{name}/{k}", v, "0 (nothing decodable)"))
    else:
        rows += [(f"{name}/{k}", v, "") for k, v in items if "/" not in k]
    return rows


def summary_table(
    results: Mapping[str, Any] | None,
    train_scalars: Mapping[str, float] | None,
    *,
    eval_batch_size: int,
    batch_size: int,
    num_classes: Mapping[str, int] | None = None,
    dataset: str = "",
) -> str:
    """The final metrics of a run as a short text table, with chance levels.

    Args:
      results: ``{"step": s, "<evaluator>": {"<metric>": value}}`` (``results.json``).
      train_scalars: the last logged train scalars (``"train/loss"``, ...).
      eval_batch_size: ``config.eval_batch_size`` (0: ``batch_size``): N of the in-batch
        evaluators.
      batch_size: ``config.batch_size``: N of the train scalars.
      num_classes: classes of each classification target (probe accuracy chance).
      dataset: ``config.dataset.name`` (``ovaib_parity`` gets a note: its examples
        share bit patterns, so several candidates of a batch are equally right).

    Chance levels: in-batch top-k ``k/N``, the objective's accuracy ``1/N``, an InfoNCE MI
    bound at most ``log N`` (N: the batch); whole-split retrieval R@k ``k/num_candidates``
    (with label relevance the evaluator's ``chance/R@k``: a random ranking finds one of
    the query's class far more often); probe accuracy ``1/num_classes``; probe R² 0.
    """
    n_eval, n_train = int(eval_batch_size or batch_size), int(batch_size)
    rows: list[tuple[str, float, str]] = []
    ts = {k: v for k, v in (train_scalars or {}).items() if _num(v)}
    if "train/loss" in ts:
        rows.append(("train/loss", ts["train/loss"], ""))
    for k in sorted(ts):
        if k.startswith("train/accuracy") and k.count("/") == 1:
            rows.append((k, ts[k], _ratio(1, n_train)))
    rows += _mean_row("train/mi_bound", ts, "train/mi_bound/", n_train)
    if "train/steps_per_sec" in ts:
        rows.append(("train/steps_per_sec", ts["train/steps_per_sec"], ""))
    in_batch = bool(rows)
    for name, metrics in (results or {}).items():
        if isinstance(metrics, Mapping):
            new = _evaluator_rows(name, metrics, n_eval, dict(num_classes or {}))
            in_batch |= name in ("heldout_loss", "inbatch_retrieval") and bool(new)
            rows += new
    step = (results or {}).get("step")
    title = f"Results at step {step}" if step is not None else "Results"
    if not rows:
        return f"{title}: no metrics."
    table = [("metric", "value", "chance / bound")]
    table += [(k, f"{v:.4g}", c) for k, v, c in rows]
    w0, w1 = (max(len(r[i]) for r in table) for i in (0, 1))
    lines = [f"{title}:"]
    lines += [f"  {a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in table]
    notes = []
    if in_batch:
        notes.append(
            "In-batch metrics find each example's partner among the N examples of its "
            f"batch (N = {n_eval} at evaluation: eval_batch_size, or batch_size when 0; "
            f"N = {n_train} in training: batch_size). Chance: k/N for top-k, 1/N for the "
            "objective's accuracy; an InfoNCE MI bound is at most log N."
        )
        if dataset == "ovaib_parity":
            notes.append(
                "ovaib_parity: a modality takes only P = 2^(dataset.config.k) bit "
                "patterns, so about N/P candidates of a batch share the true one's pattern "
                "and are equally right (they differ only by noise): even a perfect model "
                "reaches only about top-k = min(1, kP/N) and accuracy P/N; chance stays "
                "k/N."
            )
    for note in notes:
        lines += textwrap.wrap(note, 96, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- logging


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``prefix`` and contains ``needle``."""

    def __init__(self, prefix: str, needle: str):
        super().__init__()
        self.prefix, self.needle = prefix, needle

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that does not format: not ours to judge
            return True
        return not (message.startswith(self.prefix) and self.needle in message)


# (logger, message prefix, text the message must also contain) of every dropped line.
NOISE = (
    # Every CPU/GPU start without libtpu (logged at INFO by JAX); a TPU that fails to
    # start for any other reason (in use, ...) is still reported.
    ("jax._src.xla_bridge", "Unable to initialize backend 'tpu'", "libtpu.so"),
)


def _late_asyncio_callback(unraisable: Any) -> bool:
    """True for the unraisable ``RuntimeError('Event loop is closed')`` raised in
    ``loop.call_soon_threadsafe``: a background write (tensorstore under orbax) finished
    after the event loop that awaited it had ended, because a sibling write failed first.
    The failure itself is reported once, by the checkpoint manager."""
    if unraisable.exc_type is not RuntimeError or str(unraisable.exc_value) != (
        "Event loop is closed"
    ):
        return False
    tb, names = unraisable.exc_traceback, set()
    while tb is not None:
        names.add(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    return "call_soon_threadsafe" in names


class _UnraisableFilter:
    """``sys.unraisablehook`` that drops :func:`_late_asyncio_callback` and passes every
    other unraisable exception on to the hook it replaced."""

    def __init__(self, previous: Callable[[Any], Any]):
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        if not _late_asyncio_callback(unraisable):
            self.previous(unraisable)


def install_log_filters() -> None:
    """Installs the filters of :data:`NOISE` and the ``sys.unraisablehook`` filter of
    :func:`_late_asyncio_callback` (once; idempotent)."""
    if not isinstance(sys.unraisablehook, _UnraisableFilter):
        sys.unraisablehook = _UnraisableFilter(sys.unraisablehook)
    for name, prefix, needle in NOISE:
        logger = logging.getLogger(name)
        if not any(
            isinstance(f, _DropMessage) and (f.prefix, f.needle) == (prefix, needle)
            for f in logger.filters
        ):
            logger.addFilter(_DropMessage(prefix, needle))


def setup_logging(argv: list[str] | None = None) -> None:
    """What every command line does first: refuses extra positional arguments, installs
    the noise filters, logs ``ovaib_jax`` at INFO and orbax/TFDS's per-file chatter
    (absl INFO) not at all."""
    if argv is not None and len(argv) > 1:
        from absl import app

        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    install_log_filters()
    logging.getLogger("ovaib_jax").setLevel(logging.INFO)
    logging.getLogger("absl").setLevel(logging.WARNING)


# ----------------------------------------------------------------------------- errors


def exit_with(program: str, message: str, status: int = USAGE_ERROR) -> NoReturn:
    """Writes ``program: message`` to stderr and exits with ``status``."""
    sys.stderr.write(f"{program}: {message}\n")
    sys.stderr.flush()
    sys.exit(status)


def config_keys(config: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of ``config`` (sections and leaves)."""
    out = []
    for k, v in config.items():
        key = f"{prefix}{k}"
        out.append(key)
        if isinstance(v, (Mapping, ml_collections.ConfigDict)):
            out += config_keys(v, key + ".")
    return out


_MISSING = object()


def _has_key(config: Any, key: str) -> bool:
    return _node(config, key, _MISSING) is not _MISSING


def unknown_key_message(
    config: Any, key: str, *, flag: str = "--config.", config_file: str = ""
) -> str | None:
    """One line for ``key`` (dotted) absent from ``config``; None when it is there.

    Names the closest valid key (:func:`closest_key`) and, for
    ``objective.<name>``, the hyper-parameters the objective takes and the objectives
    that take ``name`` (``--config=<config_file>:objective=<one of them>``).
    ``flag``: how the program spells a key (``--config.``, ``--set=``).
    """
    if _has_key(config, key):
        return None
    msg = f"{flag}{key}: no such config key"
    section, _, hparam = key.partition(".")
    objective = config.get("objective") if hasattr(config, "get") else None
    if section == "objective" and hparam and "." not in hparam and objective is not None:
        name = objective.get("name", "")
        takes = sorted(k for k in objective if k != "name")
        msg += f"; objective {name!r} takes {', '.join(takes)}"
        others = [o for o in losses.names() if o != name and _takes(o, hparam)]
        if others:
            path, _, arg = config_file.partition(":")
            items = [a for a in arg.split(",") if a and not a.startswith("objective=")]
            pick = ",".join([*items, f"objective={others[0]}"])
            msg += (
                f"; {hparam} is a hyper-parameter of {', '.join(others)} "
                f"(--config={path or 'FILE'}:{pick})"
            )
    close = closest_key(config, key)
    if close:
        return msg + f". Did you mean {flag}{close}?"
    parent = _node(config, key.rpartition(".")[0]) if "." in key else None
    if parent is not None and _section(parent):  # nothing close: what the section holds
        return msg + f"; {key.rpartition('.')[0]} holds {', '.join(sorted(map(str, parent)))}."
    return msg + "."


def _node(config: Any, key: str, default: Any = None) -> Any:
    """The value at dotted ``key`` of ``config``, or ``default`` where there is none."""
    node = config
    for part in key.split("."):
        if not _section(node) or part not in node:
            return default
        node = node[part]
    return node


def _section(node: Any) -> bool:
    return isinstance(node, (Mapping, ml_collections.ConfigDict))


def closest_key(config: Any, key: str) -> str | None:
    """The valid key ``key`` (dotted) was most likely meant to be, or None.

    Each part of ``key`` missing at its level is replaced by the closest name there
    (difflib); failing that, a key anywhere in the config whose last part is close to
    ``key``'s (a key in the wrong section).
    """
    node, fixed = config, []
    for part in key.split("."):
        if not _section(node):
            break
        name = part if part in node else None
        if name is None:
            close = difflib.get_close_matches(part, [str(k) for k in node], n=1, cutoff=0.6)
            name = close[0] if close else None
        if name is None:
            break
        fixed.append(name)
        node = node[name]
    else:
        return ".".join(fixed)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf: dict[str, list[str]] = {}
    for k in config_keys(config):
        by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    close = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
    if not close:
        return None
    return max(by_leaf[close[0]], key=lambda k: difflib.SequenceMatcher(None, key, k).ratio())


def _takes(objective: str, hparam: str) -> bool:
    try:
        return hparam in configs.objective_config(objective)
    except Exception:  # an objective whose config cannot be built: not a suggestion
        return False


def short_flag_error(message: str) -> str:
    """absl's flag error, without the traceback ml_collections puts in it for an
    experiment file that fails (its first line and the exception's line are kept)."""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        head = lines[0].removesuffix(":")
        head = head.removesuffix(" Error whilst parsing config file").removesuffix(":")
        return f"{head}: {lines[-1]}"
    return " ".join(lines)


def _section_message(
    config: Any, config_file: str, keys: Sequence[str], config_flag: str
) -> str | None:
    """One line for the first of ``keys`` that names a section (given one value, e.g.
    ``--config.objective=symile``): set its keys, or (the objective) the file's argument."""
    for key in keys:
        if _section(_node(config, key)):
            path, _, arg = config_file.partition(":")
            hint = ""
            if key == "objective":
                items = [a for a in arg.split(",") if a and not a.startswith("objective=")]
                pick = ",".join([*items, "objective=NAME"])
                hint = f", or pick the objective with --{config_flag}={path}:{pick}"
            return (
                f"--{config_flag}.{key} is a section, not a value: set its keys "
                f"(--{config_flag}.{key}.KEY=VALUE){hint}."
            )
    return None


def _overrides(argv: Sequence[str], name: str) -> tuple[str, list[str]]:
    """``(value of --name, [KEY of each --name.KEY=VALUE])`` in ``argv``."""
    config_file, keys = "", []
    for i, arg in enumerate(argv):
        body = arg.lstrip("-")
        if arg.startswith("-") and (body == name or body.startswith(name + "=")):
            config_file = body.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else "")
        elif arg.startswith("-") and body.startswith(name + "."):
            keys.append(body[len(name) + 1 :].partition("=")[0])
    return config_file, keys


def parse_flags(
    argv: Sequence[str], *, program: str, config_flag: str = "config", flag_values: Any = None
) -> list[str]:
    """absl's flag parsing with one short message for a bad command line.

    For ``app.run(main, flags_parser=lambda a: console.parse_flags(a, program=...))``:
    an unknown ``--config.KEY`` (which ml_collections lets escape as a traceback) gives
    :func:`unknown_key_message`; an experiment file that fails gives its exception's
    line, one that does not exist the OS error; any other flag error absl's message.
    Each exits with :data:`USAGE_ERROR`.
    """
    from absl import flags

    fv = flags.FLAGS if flag_values is None else flag_values
    try:
        args = fv(list(argv))
        if config_flag in fv and fv[config_flag].value is not None:
            # An experiment file that could not be read raises on first use: now.
            getattr(fv[config_flag].value, "keys")  # noqa: B009
        return args
    except flags.Error as e:
        message = None
        if "as a ConfigDict" in str(e):  # a whole section given one value
            config_file, keys = _overrides(argv, config_flag)
            try:
                config = configs.load_experiment(config_file)
                message = _section_message(config, config_file, keys, config_flag)
            except Exception:
                message = None
        exit_with(program, message or f"{short_flag_error(str(e))} (see --helpshort).")
    except OSError as e:  # no such experiment file (ml_collections defers the error)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        exit_with(program, f"--{config_flag}: {lines[-1] if lines else e}")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        # ml_collections' config_flags: an override of a key the config lacks.
        config_file, keys = _overrides(argv, config_flag)
        message = None
        try:
            config = configs.load_experiment(config_file)
            for key in keys:
                message = unknown_key_message(
                    config, key, flag=f"--{config_flag}.", config_file=config_file
                )
                if message:
                    break
            message = message or _section_message(config, config_file, keys, config_flag)
        except Exception:  # the experiment file itself fails: absl reports that
            message = None
        detail = str(e).strip().strip("'\"").splitlines()[0] if str(e).strip() else ""
        exit_with(program, message or f"bad --{config_flag} override: {type(e).__name__}: {detail}")
