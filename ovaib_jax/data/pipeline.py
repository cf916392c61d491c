"""The grain input pipeline: seeded shuffling, epochs, per-process sharding, batching.

The pipeline is defined on a *global example stream*: epoch after epoch, every
example of the source in a fresh seeded permutation (``seed`` and the epoch number pick
the permutation). That stream is cut into global batches of
``batch_size * process_count`` consecutive examples, and process ``p`` takes the
``p``-th block of ``batch_size`` examples of each global batch. Hence:

* the global batches do not depend on ``process_count``: P processes with per-process
  batch B see exactly what one process with batch P * B sees;
* within every epoch of the stream each example is seen exactly once over all
  processes;
* with ``epoch_aligned`` (the default) every global batch lies inside one epoch: of
  each epoch's permutation the first ``n // G * G`` examples are batched (``G`` the
  global batch) and the other ``n mod G`` left out of that epoch (other ones each
  shuffled epoch), so no batch holds an example twice (a positive pair that is also a
  negative one, in a contrastive loss). With ``epoch_aligned=False`` batches run on
  across epoch boundaries (as with ``repeat`` before ``batch``; the stream of runs
  recorded before this option): a batch at a boundary may hold an example twice, and
  with ``drop_remainder`` only the incomplete global batch at the very end of a finite
  run is dropped. Either way every process yields the same number of batches. (One
  epoch is the same in both modes.)

Everything is index-based (a grain ``MapDataset`` of batches), so the iterator state is
a few integers: ``get_state()`` is JSON-serialisable and ``set_state()`` resumes
exactly, also mid-epoch and across epoch boundaries.

Batches are read a whole batch at a time (the default, ``batched=True``): the stream
positions of batch ``i`` and their example indices are computed with numpy, the source
is read once per batch and the examples are stacked per key. How a batch is read
depends on what the source offers, fastest first:

* ``source.get_batch(indices) -> {key: (len(indices), *shape)}`` (columnar sources such
  as :class:`ArraySource`): one fancy-index per key, no per-example Python work;
* a TFDS ``ArrayRecordDataSource`` whose features are fixed-shape numbers (every dataset
  of this package): the raw records are read with one ArrayRecord read per file and
  decoded a whole batch at a time with numpy (:func:`record_decoder`; exactly TFDS's
  values and dtypes); a large batch (images) in parts, read and decoded in parallel;
* ``source.__getitems__(indices) -> [example, ...]`` (other TFDS sources: one batched
  read, TFDS's per-example decode), then stacked per key;
* ``source[i]`` for each index, then stacked.

``batched=False`` builds the same batches from grain's per-example graph (a shuffle
node, ``repeat``, ``map``, ``batch``, slicing); it is the slow reference the batched
path is tested against, and both have the same iterator state.

Shuffling: epoch ``e`` is ordered by the permutation ``argsort`` of ``n`` random 64-bit
words of ``PCG64(SeedSequence([seed, e]))`` (both algorithms are fixed by numpy's
stability guarantees for bit generators and seed sequences, so an iterator state stays
valid across numpy versions). With ``shuffle_block = B > 1`` the same permutation orders
the ``ceil(n / B)`` blocks of ``B`` consecutive examples instead, each block in order: an
uncached record file is then read in runs of ``B`` records. A permutation costs
O(n log n) numpy work once per epoch and 4 bytes per example while cached (at most a few
epochs at a time).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from ovaib_jax.data import integrity

Example = Mapping[str, Any]
Batch = dict[str, np.ndarray]

# Epoch permutations kept per dataset: a batch rarely spans more than two epochs, and
# prefetch threads read a few batches ahead.
_CACHED_EPOCHS = 4


class ArraySource:
    """Examples held as numpy columns: ``src[i]`` is row ``i`` of every column.

    The pipeline reads a batch from it with one fancy-index per column
    (:meth:`get_batch`, a copy), so batching costs no per-example Python work. ``src[i]``
    returns views into the columns: a per-example ``transform`` must not modify its input
    in place.

    Args:
      columns: ``{key: array (n, *shape)}``, every array with the same first dimension.
    """

    def __init__(self, columns: Mapping[str, Any]):
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise ValueError(
                "Columns of different lengths: "
                + ", ".join(f"{k}: {len(v)}" for k, v in self.columns.items())
            )
        self.length = lengths.pop() if lengths else 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {k: v[i] for k, v in self.columns.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """``{key: column[indices]}``: the examples at ``indices``, stacked."""
        idx = np.asarray(indices, dtype=np.intp)
        return {k: v[idx] for k, v in self.columns.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.length} examples, keys {sorted(self.columns)})"


def stack_examples(examples: Sequence[Any]) -> Any:
    """Stacks example dicts (nested dicts, tuples and lists too) along a new first axis."""
    first = examples[0]
    if isinstance(first, Mapping):
        return {k: stack_examples([ex[k] for ex in examples]) for k in first}
    if isinstance(first, tuple | list):
        return type(first)(stack_examples([ex[j] for ex in examples]) for j in range(len(first)))
    return np.stack([np.asarray(x) for x in examples])


def read_batch(
    source: Sequence[Example],
    indices: np.ndarray,
    transform: Callable[[Example], Example] | None = None,
    *,
    keys: Sequence[str] | None = None,
) -> Any:
    """The examples of ``source`` at ``indices``, stacked, with one batched read if possible.

    Uses ``source.get_batch`` (columns), else raw records decoded a batch at a time (TFDS
    ArrayRecord sources, see :func:`record_decoder`), else ``source.__getitems__``, else
    ``source[i]`` (see the module docstring). ``transform`` is applied to each example
    before stacking; ``keys`` keeps only those keys, in that order (default: all). A read
    that fails on a damaged record file raises CorruptDataError naming the file.
    """
    decoder = record_decoder(source) if transform is None else None
    return _read_batch(source, indices, transform, keys, decoder)


def _read_batch(
    source: Sequence[Example],
    indices: np.ndarray,
    transform: Callable[[Example], Example] | None,
    keys: Sequence[str] | None,
    decoder: _RecordDecoder | None,
) -> Any:
    get_batch = getattr(source, "get_batch", None)
    if transform is None and get_batch is not None:
        return _select(get_batch(indices), keys)
    index_list = np.asarray(indices).tolist()
    getitems = getattr(source, "__getitems__", None)
    try:
        if decoder is not None and transform is None:
            return _read_and_decode(source, index_list, keys, decoder)
        examples = getitems(index_list) if getitems is not None else [source[i] for i in index_list]
    except Exception as e:  # a damaged record file: say which one and how to rebuild
        error = integrity.read_error(source, index_list)
        if error is None:
            raise
        raise error from e
    if transform is not None:
        examples = [transform(ex) for ex in examples]
    return _select(stack_examples(examples), keys)


def _read_and_decode(
    source: Any, index: list[int], keys: Sequence[str] | None, decoder: _RecordDecoder
) -> Batch:
    """Reads and decodes the records ``index`` of a TFDS ArrayRecord source: a large batch
    (images) in parts, read and decoded in parallel by the read threads (numpy and the
    ArrayRecord reads release the GIL), each part written into its rows of the batch."""
    n = len(index)
    parts = min(os.cpu_count() or 1, _MAX_PARTS, n * decoder.example_bytes() // _PART_BYTES)
    if parts < 2 or not decoder.usable:
        return decoder.decode(read_records(source, index), keys)
    wanted = decoder.keys(keys)
    out = decoder.empty(n, wanted)
    bounds = np.linspace(0, n, parts + 1).astype(int).tolist()

    def part(start: int, stop: int) -> None:
        records = read_records(source, index[start:stop], parallel=False)
        decoder.decode(records, wanted, {k: v[start:stop] for k, v in out.items()})

    pool = _read_pool()
    pending = [pool.submit(part, a, b) for a, b in itertools.pairwise(bounds[1:])]
    part(bounds[0], bounds[1])  # this thread decodes the first part
    for future in pending:
        future.result()
    return out


def _select(batch: Any, keys: Sequence[str] | None) -> Any:
    return batch if keys is None else {k: batch[k] for k in keys}


class _SelectKeys:
    """``example -> {k: example[k] for k in keys}`` (picklable, for grain workers)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)

    def __call__(self, example: Example) -> dict[str, Any]:
        return {k: example[k] for k in self.keys}


# ---- TFDS ArrayRecord sources: raw records read in batches, decoded with numpy ------------
#
# A TFDS ArrayRecord data source decodes each record on its own: a protobuf parse, then
# one ``np.array`` per feature built from a Python list of values (about 60 us per small
# example, milliseconds per image). For the features this package writes (fixed-shape
# ``Tensor`` / ``Scalar`` / ``ClassLabel`` of numbers, no encoding) a batch is instead read
# raw (one batched ArrayRecord read) and decoded with a handful of numpy operations over the
# whole batch. The records are ``tf.train.Example`` protos::
#
#   Example  { Features features = 1; }
#   Features { map<string, Feature> feature = 1; }   // entries: key = 1, value = 2
#   Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
#                      Int64List int64_list = 3; } }
#   FloatList / Int64List { repeated float|int64 value = 1 [packed]; }
#
# so a feature's values are one length-delimited run of bytes: little-endian float32s
# (floats; float64 and float16 features are stored as float32) or varints (integers and
# bools). The layout (the bytes that are not values) is read from one record of the batch
# in Python, then checked for every record at once: records of equal length whose layout
# bytes are equal (the usual case when every value has a fixed size) are cut as columns of
# one (records, bytes) array; otherwise the layout is followed for all records in lockstep
# (vectorised over records), which checks every tag, key and nested length. Anything else
# (another feature type, an encoding, a record that does not follow the layout of any of a
# few first records, a damaged record) is decoded by TFDS itself, so the result is always
# exactly TFDS's decode stacked by :func:`stack_examples`: the same keys, values and dtypes
# (a scalar feature is decoded to a Python number, hence stacked as int64, float64 or bool).
# A feature of size 0 (a dimension 0 in its shape) is an empty list on the wire: its bytes
# are layout, checked like any other, and it decodes to an empty array.

_FLOAT_LIST, _INT64_LIST = 2, 3  # Feature's field numbers
_NUMBER_DTYPES = frozenset(
    map(np.dtype, "bool int8 int16 int32 int64 uint8 uint16 uint32 float16 float32 float64".split())
)
_FIXED, _OPEN, _CLOSE, _PAYLOAD = range(4)  # steps of a record layout
_EMPTY = -1  # the slot of a feature stored as an empty list (a size-0 feature)
_PAD = bytes(64)  # after the last record: reads just past a malformed record stay inside
_TEMPLATES_PER_BATCH = 4  # layouts tried per batch before TFDS decodes it
_PART_BYTES = 1 << 20  # a batch of more serialized bytes is read and decoded in parts
_MAX_PARTS = 4
_ROW_BYTES = 2048  # payloads at least this large (on average) are decoded row by row


class _Unsupported(Exception):
    """The vectorised decoder does not handle this batch: TFDS decodes it."""


@dataclasses.dataclass(frozen=True)
class _Field:
    """A fixed-shape number feature: its shape, stored dtype and stacked dtype."""

    shape: tuple[int, ...]
    size: int
    dtype: np.dtype
    out: np.dtype  # dtype of the stacked batch
    wire: int  # _FLOAT_LIST or _INT64_LIST


@dataclasses.dataclass
class _Layout:
    """Where one record keeps its values: the steps to check it, the payload slot of each
    feature key, and (for the columnar check) its bytes and payload spans."""

    steps: list[tuple[int, Any]]
    slots: dict[str, int]  # key -> slot of the payload holding its values
    record: np.ndarray  # the record's bytes
    spans: list[tuple[int, int]]  # (start, end) of every payload, in slot order

    def __post_init__(self):
        runs = [arg for step, arg in self.steps if step == _FIXED]
        self.fixed_bytes = np.frombuffer(b"".join(runs), np.uint8)
        self.fixed_run = np.repeat(np.arange(len(runs)), [len(r) for r in runs])
        self.fixed_offset = np.concatenate([np.arange(len(r)) for r in runs])
        # Bytes read past a position clipped after a payload, before the next payload.
        reach = ahead = 0
        for step, arg in self.steps:
            ahead += len(arg) if step == _FIXED else 5 if step != _CLOSE else 0
            reach = max(reach, ahead)
            ahead = 0 if step == _PAYLOAD else ahead
        self.reach = reach + 1
        # The reach of these steps in any order (the same entries in another map order
        # can join more fixed bytes between two payloads, e.g. two empty lists).
        varints = sum(step in (_OPEN, _PAYLOAD) for step, _ in self.steps)
        self.any_order_reach = len(self.fixed_bytes) + 5 * varints + 1


def _record_fields(source: Any) -> dict[str, _Field] | None:
    """The features of a TFDS ArrayRecord data source if the vectorised decoder handles
    every one of them (see above), else None."""
    info = getattr(source, "dataset_info", None)
    inner = getattr(source, "data_source", None)
    if info is None or not hasattr(inner, "__getitems__"):
        return None
    if getattr(source, "decoders", None) is not None:
        return None
    method = getattr(getattr(source, "deserialize_method", None), "name", None)
    file_format = getattr(getattr(info, "file_format", None), "name", None)
    if method != "DESERIALIZE_AND_DECODE" or file_format != "ARRAY_RECORD":
        return None
    import tensorflow_datasets as tfds

    features = getattr(info, "features", None)
    if type(features) is not tfds.features.FeaturesDict:
        return None
    kinds = (tfds.features.Tensor, tfds.features.Scalar, tfds.features.ClassLabel)
    fields = {}
    for key, feature in features.items():
        if type(feature) not in kinds:
            return None
        stored = feature.get_serialized_info()
        shape = tuple(feature.shape)
        try:
            dtype = np.dtype(feature.np_dtype)
            same = tuple(stored.shape) == shape and np.dtype(stored.np_dtype) == dtype
        except TypeError:  # a string, or no numpy dtype
            return None
        if (
            not same
            or dtype not in _NUMBER_DTYPES
            or any(not isinstance(d, int) or d < 0 for d in shape)
            or getattr(stored, "optional", False)
            or getattr(stored, "sequence_rank", 0)
        ):
            return None
        if shape:
            out = dtype
        else:  # TFDS decodes a scalar to a Python number
            out = np.dtype({"b": bool, "f": np.float64}.get(dtype.kind, np.int64))
        wire = _FLOAT_LIST if dtype.kind == "f" else _INT64_LIST
        fields[key] = _Field(shape, math.prod(shape), dtype, out, wire)
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Unsupported("varint too long")


def _layout(record: bytes, fields: Mapping[str, _Field]) -> _Layout:
    """The layout of one serialized ``tf.train.Example`` (raises _Unsupported)."""
    steps: list[tuple[int, Any]] = []
    spans: list[tuple[int, int]] = []
    slots: dict[str, int] = {}

    def fixed(start: int, stop: int) -> None:
        if steps and steps[-1][0] == _FIXED:
            steps[-1] = (_FIXED, steps[-1][1] + record[start:stop])
        else:
            steps.append((_FIXED, record[start:stop]))

    def opened(pos: int, tag: int, end: int) -> tuple[int, int]:
        """Checks the tag byte at ``pos``; returns (content start, content end)."""
        if pos >= end or record[pos] != tag:
            raise _Unsupported("unexpected field")
        fixed(pos, pos + 1)
        length, start = _varint(record, pos + 1)
        if start + length > end:
            raise _Unsupported("length past the end")
        steps.append((_OPEN, None))
        return start, start + length

    pos, end = 0, len(record)
    while pos < end:  # Example: features (repeated occurrences merge)
        pos, features_end = opened(pos, 0x0A, end)
        while pos < features_end:  # Features: map entries
            pos, entry_end = opened(pos, 0x0A, features_end)
            key, kind, slot = None, None, None
            while pos < entry_end:
                if record[pos] == 0x0A:  # the key, checked as fixed bytes
                    length, start = _varint(record, pos + 1)
                    if start + length > entry_end:
                        raise _Unsupported("length past the end")
                    fixed(pos, start + length)
                    key, pos = record[start : start + length], start + length
                    continue
                pos, feature_end = opened(pos, 0x12, entry_end)  # the value: a Feature
                kind = slot = None
                while pos < feature_end:  # oneof: the last list wins
                    tag = record[pos]
                    if tag not in (_FLOAT_LIST << 3 | 2, _INT64_LIST << 3 | 2):
                        raise _Unsupported("not a number list")
                    kind = tag >> 3
                    pos, list_end = opened(pos, tag, feature_end)
                    if pos == list_end:  # no values: all layout (a size-0 feature)
                        slot = _EMPTY
                        steps.append((_CLOSE, None))
                        continue
                    if record[pos] != 0x0A:
                        raise _Unsupported("unpacked values")
                    fixed(pos, pos + 1)
                    length, start = _varint(record, pos + 1)
                    if start + length != list_end:
                        raise _Unsupported("more than one packed run")
                    steps.append((_PAYLOAD, len(spans)))
                    slot = len(spans)
                    spans.append((start, list_end))
                    pos = list_end
                    steps.append((_CLOSE, None))
                steps.append((_CLOSE, None))
            steps.append((_CLOSE, None))
            name = key.decode("utf-8", "replace") if key is not None else ""
            field = fields.get(name)
            if field is not None:
                if slot is None or kind != field.wire or (slot == _EMPTY) != (not field.size):
                    raise _Unsupported(f"feature {name!r} is not stored as expected")
                slots[name] = slot  # a repeated key: the last entry wins
        steps.append((_CLOSE, None))
    if set(slots) != set(fields):
        raise _Unsupported("missing features")
    return _Layout(steps, slots, np.frombuffer(record, np.uint8), spans)


_VARINT_SHIFTS = np.arange(0, 35, 7, dtype=np.int64)


def _read_varints(buf: np.ndarray, pos: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, Any]:
    """(values, byte counts) of the varints (lengths: at most 5 bytes) at ``pos``; rows
    whose varint is longer get ``ok`` False."""
    first = buf[pos]
    if first.max() < 0x80:  # one byte each (lengths below 128)
        return first, 1
    raw = buf[pos[:, None] + np.arange(5)].astype(np.int64)
    last = raw < 0x80
    count = last.argmax(axis=1) + 1  # the first byte without the high bit ends it
    ok &= last.any(axis=1)
    used = np.arange(5) < count[:, None]
    value = (((raw & 0x7F) << _VARINT_SHIFTS) * used).sum(axis=1)
    return value, count


def _follow(layout: _Layout, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Follows ``layout`` in every record (vectorised over records).

    Returns (ok, payload starts, payload lengths): ``ok[r]`` is True where record r has
    exactly this layout (every tag, key and nested length checked). ``buf`` ends with at
    least ``layout.reach`` bytes after the last record.
    """
    ok = np.ones(len(starts), bool)
    limit = len(buf) - layout.reach  # reads stay inside buf, whatever a record holds
    pos = starts
    fixed_at: list[np.ndarray] = []  # where each fixed run must be: checked at the end
    closes: list[tuple[np.ndarray, np.ndarray]] = []
    opened: list[np.ndarray] = []
    payload_pos: list[np.ndarray] = []
    payload_len: list[np.ndarray] = []
    for step, arg in layout.steps:
        if step == _FIXED:
            fixed_at.append(pos)
            pos = pos + len(arg)
        elif step == _CLOSE:
            closes.append((pos, opened.pop()))
        else:
            value, count = _read_varints(buf, pos, ok)
            pos = pos + count
            if step == _OPEN:
                opened.append(pos + value)
            else:
                payload_pos.append(pos)
                payload_len.append(np.asarray(value, np.int64))
                pos = np.minimum(pos + value, limit)
    at = np.stack(fixed_at, axis=1)[:, layout.fixed_run] + layout.fixed_offset
    ok &= (buf[at] == layout.fixed_bytes).all(axis=1)
    ok &= (np.stack([a for a, _ in closes]) == np.stack([b for _, b in closes])).all(axis=0)
    ok &= pos == ends
    return ok, payload_pos, payload_len


def _payload_bytes(buf: np.ndarray, pos: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The bytes ``buf[pos[r] : pos[r] + lengths[r]]`` of every row r, concatenated."""
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    return buf[np.repeat(pos - offsets, lengths) + np.arange(total)]


def _decode_varints(
    data: np.ndarray, lengths: np.ndarray, size: int, dtype: np.dtype, out: np.ndarray
) -> None:
    """Writes the ``size`` varints of each row (rows of ``lengths`` bytes, concatenated
    in ``data``) into ``out`` (rows, size), cast to its dtype as TFDS does."""
    rows = len(lengths)
    more = data >= 0x80
    continued = np.count_nonzero(more)
    if not continued:  # every value below 128: one byte each
        if (lengths != size).any():
            raise _Unsupported("wrong number of values")
        out[...] = data.reshape(rows, size)
        return
    if lengths.min() <= 0:
        raise _Unsupported("empty payload")
    row_ends = np.cumsum(lengths)
    if more[row_ends - 1].any():
        raise _Unsupported("a value runs past its record")
    per_row = np.add.reduceat(more, row_ends - lengths) if rows > 1 else continued
    if np.any(lengths - per_row != size):  # a value ends at each byte below 128
        raise _Unsupported("wrong number of values")
    if dtype == np.uint8 and not np.any(more[:-1] & (data[1:] != 1)):
        # A uint8 value v >= 128 is the two bytes (v, 1): the first byte is the value.
        keep = np.empty(len(data), bool)
        keep[0] = True
        np.logical_not(more[:-1], out=keep[1:])
        if out.dtype == np.uint8 and out.flags.c_contiguous:
            np.compress(keep, data, out=out.reshape(-1))
        else:
            out[...] = np.compress(keep, data).reshape(rows, size)
        return
    ends = np.flatnonzero(~more)
    begins = np.empty_like(ends)
    begins[0] = 0
    begins[1:] = ends[:-1] + 1
    widths = ends - begins + 1
    if widths.max() > 10:
        raise _Unsupported("varint too long")
    shift = (np.arange(len(data)) - np.repeat(begins, widths)).astype(np.uint64) * np.uint64(7)
    parts = (data & 0x7F).astype(np.uint64) << shift
    values = np.add.reduceat(parts, begins).view(np.int64)
    if dtype != np.int64 and dtype != np.bool_:  # TFDS refuses values out of range
        if (values.astype(dtype).astype(np.int64) != values).any():
            raise _Unsupported("value out of range")
    out[...] = values.reshape(rows, size)


def _fill(field: _Field, buf: np.ndarray, pos: np.ndarray, lengths: np.ndarray, out) -> None:
    """Writes one feature's values of every row (payloads at ``pos``) into ``out``
    (rows, field.size): one numpy pass over all rows when they are small, row by row
    (no copy of the payloads) when they are large."""
    if field.wire == _FLOAT_LIST and (lengths != 4 * field.size).any():
        raise _Unsupported("wrong number of values")
    if lengths.mean() < _ROW_BYTES:
        data = _payload_bytes(buf, pos, lengths)
        if field.wire == _FLOAT_LIST:
            out[...] = data.view("<f4").reshape(len(pos), field.size)
        else:
            _decode_varints(data, lengths, field.size, field.dtype, out)
        return
    uint8 = field.dtype == np.uint8 and out.dtype == np.uint8
    for row, (p, n) in enumerate(zip(pos.tolist(), lengths.tolist())):
        if field.wire == _FLOAT_LIST:
            out[row] = buf[p : p + n].view("<f4")
        elif not (uint8 and _uint8_row(buf[p : p + n], field.size, out[row])):
            _decode_varints(
                buf[p : p + n], lengths[row : row + 1], field.size, field.dtype, out[row : row + 1]
            )


def _uint8_row(data: np.ndarray, size: int, out: np.ndarray) -> bool:
    """Decodes one row of uint8 varints into ``out`` (size,): each value v < 128 is the
    byte v, each v >= 128 the two bytes (v, 1), so the values are the bytes that do not
    follow a byte >= 128. False (``out`` untouched) for anything else."""
    more = data >= 0x80
    seconds = np.count_nonzero(more)
    if len(data) - seconds != size:
        return False
    if not seconds:
        out[...] = data
        return True
    if more[-1] or np.any(more[:-1] & (data[1:] != 1)):
        return False
    keep = np.empty(len(data), bool)
    keep[0] = True
    np.logical_not(more[:-1], out=keep[1:])
    np.compress(keep, data, out=out)
    return True


class _RecordDecoder:
    """Decodes batches of raw records of a TFDS ArrayRecord source (see above)."""

    def __init__(self, features: Any, fields: dict[str, _Field]):
        self._features = features
        self._fields = fields
        self._order: list[str] | None = None  # TFDS's key order, once checked
        self._usable: bool | None = None  # None: not checked against TFDS yet
        self._layouts: dict[tuple[str, ...], _Layout] = {}  # by keys: the last one that fitted

    def decode_tfds(self, records: Sequence[bytes], keys: Sequence[str] | None) -> Batch:
        """TFDS's own decode, stacked (the reference, and the fallback)."""
        examples = [self._features.deserialize_example_np(r) for r in records]
        batch = stack_examples(examples)
        return batch if keys is None else {k: batch[k] for k in keys}

    @property
    def usable(self) -> bool:
        """Whether batches are decoded with numpy (known once a first batch is decoded)."""
        return bool(self._usable)

    def keys(self, keys: Sequence[str] | None) -> list[str]:
        """The keys a batch holds: ``keys``, or every feature in TFDS's order."""
        return list(keys) if keys is not None else list(self._order or ())

    def empty(self, n: int, keys: Sequence[str]) -> Batch:
        """Uninitialised arrays of a batch of ``n`` examples: ``{key: (n, *shape)}``."""
        return {k: np.empty((n, *self._fields[k].shape), self._fields[k].out) for k in keys}

    def example_bytes(self) -> int:
        """About how many bytes a serialized example takes (its values)."""
        return sum(f.size * (4 if f.wire == _FLOAT_LIST else 1) for f in self._fields.values())

    def decode(
        self,
        records: Sequence[bytes],
        keys: Sequence[str] | None = None,
        out: dict[str, np.ndarray] | None = None,
    ) -> Batch:
        """The records decoded and stacked: ``{key: (len(records), *shape)}``.

        With ``out`` (C-contiguous arrays of those shapes and the batch's dtypes, for the
        keys the batch holds), the values are written into it and it is returned.
        """
        if self._usable is None and records:
            self._usable = self._check(records[0])
        wanted = self.keys(keys)
        if self._usable and records and all(k in self._fields for k in wanted):
            try:
                # float32 values cast to float16 overflow to inf silently, as in TFDS.
                with np.errstate(over="ignore", invalid="ignore"):
                    return self._decode(records, wanted, out)
            except (_Unsupported, IndexError, ValueError):
                pass
        batch = self.decode_tfds(records, keys)  # TFDS raises its own errors
        if out is None:
            return batch
        for k, v in out.items():
            v[...] = batch[k]
        return out

    def _check(self, record: bytes) -> bool:
        """Whether the vectorised decode of ``record`` equals TFDS's (once per source);
        keeps TFDS's key order."""
        try:
            want = self.decode_tfds([record], None)
            got = self._decode([record], list(want))
        except Exception:
            return False
        same = set(got) == set(want) == set(self._fields) and all(
            got[k].dtype == want[k].dtype
            and got[k].shape == want[k].shape
            and np.array_equal(got[k], want[k], equal_nan=want[k].dtype.kind == "f")
            for k in want
        )
        if same:
            self._order = list(want)
        return same

    def _decode(
        self, records: Sequence[bytes], keys: list[str], out: dict[str, np.ndarray] | None = None
    ) -> Batch:
        n = len(records)
        fields = {k: self._fields[k] for k in keys}
        filled = {k: f for k, f in fields.items() if f.size}  # size 0: nothing to fill
        if out is None:
            out = self.empty(n, keys)
        elif not all(out[k].flags.c_contiguous for k in keys):
            raise _Unsupported("out must be C-contiguous")
        flat = {k: out[k].reshape(n, f.size) for k, f in fields.items()}
        lengths = np.fromiter(map(len, records), np.int64, n)
        # The layout that fitted the last batch (checked again here), else record 0's.
        layout = self._layouts.get(tuple(keys))
        fresh = layout is None
        if fresh:
            layout = _layout(records[0], fields)
        pad = max(len(_PAD), layout.any_order_reach)
        buf = np.frombuffer(b"".join([*records, bytes(pad)]), np.uint8)

        def new_layout(row: int) -> _Layout:
            found = _layout(records[row], fields)
            if found.reach > pad:
                raise _Unsupported("a layout with long fixed runs")
            return found

        width = int(lengths[0])
        if (lengths == width).all():  # the usual case with fixed-size values
            if width != len(layout.record) and not fresh:
                layout, fresh = new_layout(0), True
            if self._columns(layout, buf[: n * width].reshape(n, width), filled, flat):
                self._layouts[tuple(keys)] = layout
                return out
        starts = np.cumsum(lengths) - lengths
        rows = np.arange(n)
        for _ in range(_TEMPLATES_PER_BATCH):
            ok, payload_pos, payload_len = _follow(
                layout, buf, starts[rows], starts[rows] + lengths[rows]
            )
            if ok.any():
                done = rows[ok]
                for key, field in filled.items():
                    pos, size = payload_pos[layout.slots[key]], payload_len[layout.slots[key]]
                    if len(done) == n:  # every record: straight into the batch
                        _fill(field, buf, pos, size, flat[key])
                    else:
                        part = np.empty((len(done), field.size), field.out)
                        _fill(field, buf, pos[ok], size[ok], part)
                        flat[key][done] = part
                self._layouts[tuple(keys)] = layout
                rows = rows[~ok]
                if not len(rows):
                    return out
            elif fresh:
                raise _Unsupported("a record does not follow its own layout")
            layout, fresh = new_layout(int(rows[0])), True
        raise _Unsupported("too many layouts in one batch")

    def _columns(self, layout: _Layout, grid: np.ndarray, fields, flat) -> bool:
        """Decodes records of one length whose layout bytes all equal those of
        ``layout.record`` as columns of ``grid`` (records, bytes); False if they differ."""
        keep = np.ones(grid.shape[1], bool)
        for start, stop in layout.spans:
            keep[start:stop] = False
        if not (grid[:, keep] == layout.record[keep]).all():
            return False
        for key, field in fields.items():
            start, stop = layout.spans[layout.slots[key]]
            block = grid[:, start:stop]
            if field.wire == _FLOAT_LIST:
                if stop - start != 4 * field.size:
                    raise _Unsupported("wrong number of values")
                flat[key][...] = block.view("<f4")
            else:
                lengths = np.full(len(grid), stop - start)
                _decode_varints(block.reshape(-1), lengths, field.size, field.dtype, flat[key])
        return True


def record_decoder(source: Any) -> _RecordDecoder | None:
    """The vectorised batch decoder of a TFDS ArrayRecord data source, or None when
    ``source`` is not one or holds features it does not handle (see above)."""
    fields = _record_fields(source)
    if not fields:
        return None
    return _RecordDecoder(source.dataset_info.features, fields)


def read_records(source: Any, keys: Sequence[int], *, parallel: bool = True) -> list[bytes]:
    """The raw records ``keys`` of a TFDS ArrayRecord data source, in order.

    The keys in each record file are read with one ``read(begin, end)`` per run of
    consecutive keys on this thread's reader of the file (cheaper than one
    ``read(positions)``, see :func:`_read_positions`), the files of a batch
    in parallel by a thread pool kept for the process (array_record's own
    ``__getitems__`` starts new threads at every call), or one after the other in this
    thread with ``parallel=False``. Sources without read instructions (another
    array_record version) are read with ``__getitems__``.
    """
    inner = source.data_source
    instructions = getattr(inner, "_read_instructions", None)
    if not instructions or not len(keys):
        return list(inner.__getitems__(list(keys)))
    index = np.asarray(keys, dtype=np.int64)
    sizes = np.fromiter((ri.end - ri.start for ri in instructions), np.int64, len(instructions))
    bounds = np.cumsum(sizes)
    if index.min() < 0 or index.max() >= bounds[-1]:
        raise IndexError(f"Record keys out of range [0, {int(bounds[-1])}).")
    files = np.searchsorted(bounds, index, side="right")
    # Position in its file of each key: key - first key of the file + the file's start.
    offsets = np.array([ri.start for ri in instructions], np.int64) - (bounds - sizes)
    positions = index + offsets[files]

    def read(file: int, rows: np.ndarray | None) -> list[bytes]:
        wanted = positions if rows is None else positions[rows]
        records = _read_positions(_file_reader(inner, instructions[file].filename), wanted)
        if len(records) != len(wanted):
            raise IndexError(f"Requested {len(wanted)} records, got {len(records)}.")
        return records

    first = int(files[0])
    if (files == first).all():
        return read(first, None)
    groups = [(int(f), np.flatnonzero(files == f)) for f in np.unique(files)]
    if not parallel:
        out: list[Any] = [None] * len(index)
        for f, rows in groups:
            for row, record in zip(rows.tolist(), read(f, rows)):
                out[row] = record
        return out
    pool = _read_pool()
    pending = [(rows, pool.submit(read, f, rows)) for f, rows in groups[1:]]
    done = [(groups[0][1], read(*groups[0]))]  # this thread reads the first file
    done += [(rows, future.result()) for rows, future in pending]
    out = [None] * len(index)
    for rows, records in done:
        for row, record in zip(rows.tolist(), records):
            out[row] = record
    return out


def _read_positions(reader: Any, positions: np.ndarray) -> list[bytes]:
    """The records at ``positions`` (in that order) of one ArrayRecord file: one
    ``reader.read(begin, end)`` per run of consecutive positions.

    Measured on TFDS's record files (group_size 1, zstd) with this module's readers
    (:func:`_file_reader`): a record read alone costs 2.7 us of CPU (500-byte records)
    and a record of a run of 4-16 consecutive ones 1.2-1.5 us, where one
    ``reader.read(positions)`` for the same random positions costs 7.5-13 us a record
    (its parallel dispatch keeps array_record's thread pool spinning); 12 against 19 us
    for 8 kB records. Runs come from a block shuffle (``shuffle_block`` of
    :func:`make_iterator`).
    """
    if len(positions) == 0:
        return []
    cuts = np.flatnonzero(np.diff(positions) != 1) + 1  # where a new run starts
    starts = positions[np.r_[0, cuts]].tolist()
    stops = (positions[np.r_[cuts, len(positions)] - 1] + 1).tolist()
    out: list[bytes] = []
    for begin, end in zip(starts, stops):
        out.extend(reader.read(begin, end))
    return out


# Reader options of this module's ArrayRecord readers: a 64 kB read-ahead buffer, no
# parallel decoding (see _read_positions for what they cost).
_READER_OPTIONS = "readahead_buffer_size:65536,max_parallelism:1"
_READERS_PER_THREAD = 16
_LOCAL = threading.local()


def _file_reader(owner: Any, path: Any) -> Any:
    """This thread's ArrayRecord reader of record file ``path`` of data source ``owner``.

    A reader with a read-ahead buffer keeps a position, so each thread has its own (the
    last ``_READERS_PER_THREAD`` files it read; a thread's readers close when it ends).
    Readers belong to a data source (kept alive with them): a dataset rebuilt at the same
    path is a new source, read through new readers, never through a replaced file's.
    """
    readers = getattr(_LOCAL, "readers", None)
    if readers is None:
        readers = _LOCAL.readers = collections.OrderedDict()
    key = (id(owner), os.fspath(path))
    entry = readers.get(key)
    if entry is not None:
        readers.move_to_end(key)
        return entry[1]
    from array_record.python import array_record_module

    reader = array_record_module.ArrayRecordReader(key[1], _READER_OPTIONS)
    readers[key] = (owner, reader)
    while len(readers) > _READERS_PER_THREAD:
        readers.popitem(last=False)[1][1].close()
    return reader


_POOL_LOCK = threading.Lock()
_POOL: list[Any] = []  # [executor], created on first use


def _read_pool() -> Any:
    """The thread pool that reads (and decodes) record files in parallel (one per
    process: threads do not survive a fork, so a forked child makes its own)."""
    from concurrent.futures import ThreadPoolExecutor

    with _POOL_LOCK:
        if not _POOL:
            workers = min(8, os.cpu_count() or 1)
            _POOL.append(ThreadPoolExecutor(workers, "ovaib-records"))
        return _POOL[0]


def _forget_pool_after_fork() -> None:
    global _POOL_LOCK, _LOCAL
    _POOL_LOCK = threading.Lock()
    _POOL.clear()
    _LOCAL = threading.local()  # the parent's readers (and their buffers) stay its own


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


class _Stream:
    """Where each batch of one process lies in the global example stream.

    Args as in :func:`make_dataset`; ``n`` is the number of examples per epoch.
    """

    def __init__(
        self,
        n: int,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        num_epochs: int | None,
        process_index: int,
        process_count: int,
        drop_remainder: bool,
        block: int = 1,
        epoch_aligned: bool = True,
    ):
        self.n = n
        self.block = block
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.process_index = process_index
        self.process_count = process_count
        # Examples in the stream (sys.maxsize: endless, as grain's ``repeat(None)``).
        self.total = sys.maxsize if num_epochs is None else n * num_epochs
        # Epoch-aligned batches (one epoch needs nothing: its batches are the stream's):
        # ``self.kept`` examples of each epoch, whole global batches.
        self.kept = None
        if epoch_aligned and num_epochs != 1:
            global_batch = batch_size * process_count
            if not drop_remainder:
                raise ValueError(
                    "Epoch-aligned batches of more than one epoch drop each epoch's last "
                    "incomplete global batch: pass drop_remainder=True, num_epochs=1, or "
                    "epoch_aligned=False (batches then run on across epochs)."
                )
            if n < global_batch:
                raise ValueError(
                    f"The global batch ({global_batch} examples) is larger than the "
                    f"{n} examples of an epoch: a batch would hold examples twice. Use a "
                    f"global batch of at most {n}."
                )
            self.kept = n // global_batch * global_batch
            epochs = sys.maxsize // n if num_epochs is None else num_epochs
            stream_batches = epochs * (self.kept // batch_size)  # whole global batches
        else:
            if drop_remainder:
                stream_batches = self.total // batch_size
            else:
                stream_batches = -(-self.total // batch_size)  # exact (no float) for any total
            if process_count > 1 and drop_remainder and num_epochs is not None:
                # Keep only complete global batches: every process gets the same count.
                stream_batches = stream_batches // process_count * process_count
        self.stream_batches = stream_batches
        self.num_batches = len(range(process_index, stream_batches, process_count))
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # picklable (grain worker processes)
        state = dict(self.__dict__)
        state["_cache"], state["_lock"] = collections.OrderedDict(), None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the examples in ``epoch`` (``perm[j]``: the j-th example read)."""
        with self._lock:
            perm = self._cache.get(epoch)
            if perm is not None:
                self._cache.move_to_end(epoch)
                return perm
        perm = epoch_permutation(self.n, self.seed, epoch, self.block)
        with self._lock:
            self._cache[epoch] = perm
            while len(self._cache) > _CACHED_EPOCHS:
                self._cache.popitem(last=False)
        return perm

    def example_indices(self, positions: np.ndarray) -> np.ndarray:
        """Source indices of the examples at ``positions`` of the stream."""
        epochs, within = np.divmod(positions, self.n)
        if not self.shuffle:
            return within
        first, last = int(epochs[0]), int(epochs[-1])  # positions are increasing
        if first == last:
            return self.permutation(first)[within].astype(np.int64)
        out = np.empty_like(within)
        for e in range(first, last + 1):
            mask = epochs == e
            out[mask] = self.permutation(e)[within[mask]]
        return out

    def positions(self, index: int) -> np.ndarray:
        """Stream positions of this process's batch ``index``."""
        if index < 0:
            index += self.num_batches
        if not 0 <= index < self.num_batches:
            raise IndexError(f"Batch {index} out of range: {self.num_batches} batches.")
        start = (index * self.process_count + self.process_index) * self.batch_size
        if self.kept is not None:  # the batch's place in its epoch's kept examples
            return self.kept_position(start) + np.arange(self.batch_size, dtype=np.int64)
        stop = min(start + self.batch_size, self.total)
        return np.arange(start, stop, dtype=np.int64)

    def kept_position(self, index: int) -> int:
        """The stream position of the ``index``-th example batched (epoch-aligned batches
        skip each epoch's last ``n - kept`` positions; otherwise ``index`` itself)."""
        if self.kept is None:
            return index
        epoch, within = divmod(index, self.kept)
        return epoch * self.n + within

    def source_position(self, position: int) -> int:
        """``epoch * n + example index`` of stream ``position`` (the reference path)."""
        epoch, within = divmod(position, self.n)
        if self.shuffle:
            within = int(self.permutation(epoch)[within])
        return epoch * self.n + within


def epoch_permutation(n: int, seed: int, epoch: int, block: int = 1) -> np.ndarray:
    """The seeded permutation of ``range(n)`` for ``epoch`` (int32 when it fits).

    ``block > 1``: the blocks ``[b * block, (b + 1) * block)`` of consecutive indices (the
    last one shorter when ``block`` does not divide ``n``) in the seeded order of the
    blocks, each block's indices in increasing order. ``block = 1`` is every index shuffled
    alone.
    """
    if block < 1:
        raise ValueError(f"block must be a positive integer, got {block}.")
    blocks = -(-n // block)
    words = np.random.PCG64(np.random.SeedSequence([seed, epoch])).random_raw(blocks)
    perm = np.argsort(words, kind="stable")
    if block > 1:
        perm = (perm[:, None] * block + np.arange(block)).ravel()
        if n % block:
            perm = perm[perm < n]
    return perm.astype(np.int32) if n < 2**31 else perm


class _BatchedDataset(grain.MapDataset):
    """Batch ``i`` of one process, read with one batched read (see the module docstring)."""

    def __init__(
        self,
        source: Sequence[Example],
        stream: _Stream,
        transform: Callable[[Example], Example] | None,
        batch_transform: Callable[[Batch], Batch] | None,
        keys: Sequence[str] | None = None,
    ):
        super().__init__()
        self._source = source
        self._stream = stream
        self._transform = transform
        self._batch_transform = batch_transform
        self._keys = None if keys is None else list(keys)
        self._decoder = record_decoder(source) if transform is None else None

    def __len__(self) -> int:
        return self._stream.num_batches

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        indices = self._stream.example_indices(self._stream.positions(index))
        batch = _read_batch(self._source, indices, self._transform, self._keys, self._decoder)
        if self._batch_transform is not None:
            batch = self._batch_transform(batch)
        return batch

    def __str__(self) -> str:
        return f"BatchedDataset(source={type(self._source).__name__}, batches={len(self)})"


class _StreamOrderMapDataset(grain.MapDataset):
    """Per-example reference of the stream order: element ``i`` is the example at stream
    position ``pos`` (``i`` itself, or the ``i``-th kept position of epoch-aligned
    batches), i.e. element ``epoch * n + perm_epoch[pos % n]`` of the repeated source
    (the parent takes it mod n)."""

    def __init__(self, parent: grain.MapDataset, stream: _Stream, source: Sequence[Example]):
        super().__init__(parent)
        self._stream = stream
        self._source = source  # to name a damaged record file

    def __len__(self) -> int:
        kept = self._stream.kept
        if kept is None:
            return len(self._parent)
        return self._stream.stream_batches * self._stream.batch_size  # kept examples

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        position = self._stream.source_position(self._stream.kept_position(index))
        try:
            return self._parent[position]
        except Exception as e:
            error = integrity.read_error(self._source, [position % self._stream.n])
            if error is None:
                raise
            raise error from e

    def __str__(self) -> str:
        return "StreamOrderMapDataset"


def make_dataset(
    source: Sequence[Example],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    transform: Callable[[Example], Example] | None = None,
    batch_transform: Callable[[Batch], Batch] | None = None,
    batched: bool = True,
    keys: Sequence[str] | None = None,
    shuffle_block: int = 1,
    epoch_aligned: bool = True,
) -> grain.MapDataset:
    """The per-process pipeline as a lazy, random-access ``grain.MapDataset`` of batches.

    Arguments as in :func:`make_iterator`. Element ``i`` is the ``i``-th batch of process
    ``process_index``: a dict ``{key: array (batch_size, *shape)}``.
    """
    for name, value in (("batch_size", batch_size), ("process_index", process_index),
                        ("process_count", process_count), ("num_epochs", num_epochs)):  # fmt: skip
        if value is not None and (isinstance(value, bool) or int(value) != value):
            raise ValueError(f"{name} must be an integer, got {value!r}.")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if not 0 <= process_index < process_count:
        raise ValueError(
            f"Need 0 <= process_index < process_count, got {process_index}, {process_count}."
        )
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}.")
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if isinstance(shuffle_block, bool) or int(shuffle_block) != shuffle_block or shuffle_block < 1:
        raise ValueError(
            f"shuffle_block must be a positive integer (1: shuffle every example alone), "
            f"got {shuffle_block!r}."
        )
    if len(source) == 0:
        raise ValueError("The data source is empty.")
    integrity.check_source(source)  # a truncated record file: one clear error, now
    stream = _Stream(
        len(source),
        batch_size=batch_size,
        seed=int(seed),
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        drop_remainder=drop_remainder,
        block=int(shuffle_block),
        epoch_aligned=bool(epoch_aligned),
    )
    if batched:
        return _BatchedDataset(source, stream, transform, batch_transform, keys)
    # The per-example reference: grain's own graph, one element at a time.
    ds = grain.MapDataset.source(source)
    ds = ds.repeat(num_epochs)
    ds = _StreamOrderMapDataset(ds, stream, source)
    if transform is not None:
        ds = ds.map(transform)
    if keys is not None:
        ds = ds.map(_SelectKeys(keys))
    # An endless stream has no last partial batch; grain's length of one not dropping it
    # overflows (a float ceil of sys.maxsize / batch_size).
    ds = ds.batch(batch_size, drop_remainder=drop_remainder or num_epochs is None)
    if process_count > 1:
        if drop_remainder and num_epochs is not None:
            ds = ds[: len(ds) // process_count * process_count]
        ds = ds[process_index::process_count]
    if batch_transform is not None:
        ds = ds.map(batch_transform)
    return ds


def make_iterator(
    source: Sequence[Example],
    *,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    drop_remainder: bool = True,
    prefetch: int = 2,
    transform: Callable[[Example], Example] | None = None,
    batch_transform: Callable[[Batch], Batch] | None = None,
    batched: bool = True,
    keys: Sequence[str] | None = None,
    shuffle_block: int = 1,
    epoch_aligned: bool = True,
) -> grain.DatasetIterator:
    """A checkpointable iterator of numpy batches over ``source``.

    Args:
      source: a random-access source of example dicts (``make_source(...)``, an
        :class:`ArraySource`, a list).
      batch_size: examples per batch *in this process* (the global batch is
        ``batch_size * process_count``).
      seed: shuffling seed (a non-negative integer); the same seed gives the same batches.
      shuffle: reshuffle every epoch; ``False`` keeps the source order.
      num_epochs: passes over the data; ``None`` repeats forever.
      process_index, process_count: this process and the number of processes
        (``jax.process_index()``, ``jax.process_count()``).
      drop_remainder: drop the final incomplete global batch of a finite run;
        ``False`` yields it (then processes may get different batch counts/sizes).
        Epoch-aligned batches of more than one epoch need it.
      prefetch: batches prepared ahead by background threads; 0 reads synchronously.
      transform: optional function applied to *each example* dict before stacking (a
        Python call per example; it also turns off the columnar ``get_batch`` read).
      batch_transform: optional function applied once to *each stacked batch* dict
        (vectorised work belongs here).
      batched: read each batch with one batched read (fast, the default); ``False``
        builds the identical batches with grain's per-example graph (the reference).
      keys: keep only these example keys, in this order (default: all). A TFDS
        ArrayRecord source then decodes only those features.
      shuffle_block: 1 (the default) shuffles every example alone. ``B > 1`` shuffles
        blocks of ``B`` consecutive examples instead (see :func:`epoch_permutation`), so
        a batch is ``batch_size / B`` random blocks: for record files too large for memory,
        read in runs of ``B`` records (about half the CPU of random reads of small records;
        see :func:`_read_positions`). Every example is still seen once per epoch; examples
        stored next to each other (a time series, a class-sorted file) then share batches.
      epoch_aligned: ``True`` (the default): every global batch lies inside one epoch, so
        no batch holds an example twice; each epoch's last ``n mod G`` examples of its
        permutation (``G`` the global batch; other examples each shuffled epoch) are left
        out of that epoch. ``False``: batches run on across epoch boundaries, every
        example is used in every epoch, and a batch at a boundary may hold an example
        twice. Needs ``n >= G`` unless ``num_epochs == 1`` (where both modes agree).

    Returns:
      A ``grain.DatasetIterator`` yielding ``{key: np.ndarray (batch_size, *shape)}``;
      ``it.get_state()`` is a JSON-serialisable dict and ``it.set_state(state)`` resumes
      exactly where the state was taken (the state is the same for both paths).
    """
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0, got {prefetch}.")
    ds = make_dataset(
        source,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        process_index=process_index,
        process_count=process_count,
        drop_remainder=drop_remainder,
        transform=transform,
        batch_transform=batch_transform,
        batched=batched,
        keys=keys,
        shuffle_block=shuffle_block,
        epoch_aligned=epoch_aligned,
    )
    options = grain.ReadOptions(num_threads=min(prefetch, 4), prefetch_buffer_size=prefetch)
    return iter(ds.to_iter_dataset(options))


def steps_per_epoch(num_examples: int, *, batch_size: int, process_count: int = 1) -> int:
    """Global batches per epoch of ``num_examples`` (the last partial one not counted)."""
    return num_examples // (batch_size * process_count)


def load_arrays(
    source: Sequence[Example], *, chunk: int = 1024, keys: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Every example of ``source`` in source order, stacked: ``{key: (len(source), *shape)}``.

    Reads ``chunk`` examples per batched read; ``keys`` keeps only those keys (default:
    all). For small splits (probes, evaluation, tests, in-memory caches); the training
    path is make_iterator.
    """
    parts: dict[str, list[np.ndarray]] = {}
    decoder = record_decoder(source)
    for start in range(0, len(source), chunk):
        indices = np.arange(start, min(len(source), start + chunk))
        batch = _read_batch(source, indices, None, keys, decoder)
        for k in batch:
            parts.setdefault(k, []).append(np.asarray(batch[k]))
    return {k: np.concatenate(v) for k, v in parts.items()}
