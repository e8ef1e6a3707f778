r"""Compressed updates: what a device sends instead of its float32 arrays, and how the server reads it back.

A device compresses its *update* ``Δ = θ_k − θ`` (its trained array minus the one the server sent),
array by array; the server decodes ``θ̂_k = θ + Δ̂`` and aggregates that. What travels is the
compressed representation itself, as ordinary arrays of an ``ArrayRecord`` named
``"<array>#<part>"`` (:func:`part_key`), so the bits on the wire are the true bits
(:func:`fedmoe.federated.parameters.payload_bits` of the message) and the server can check
exactly those bytes before decoding them (:func:`decompress_arrays`).

Compressors (registry :data:`COMPRESSORS`, by name; add your own with ``COMPRESSORS.register``):

``qsgd`` (:class:`StochasticQuantiser`) — stochastic uniform quantisation, [P008]
    Each array is split in *segments* (fedmoe: the state-dict entries packed in a group; any other
    app: the array itself). With ``s = 2^{b−1} − 1`` levels each side of zero and the segment's
    scale ``m = max_j |v_j|`` (the max-norm variant of [P008]'s :math:`Q_s`, §3.1, with
    :math:`\|v\|_\infty` in place of :math:`\|v\|_2`, as in its experiments),

    .. math::

        Q(v_j) = m \,\mathrm{sign}(v_j)\, \frac{\ell_j}{s}, \qquad
        \ell_j = \lfloor s |v_j| / m + U_j \rfloor, \quad U_j \sim \mathcal{U}[0, 1),

    so :math:`\mathbb{E}[\ell_j] = s|v_j|/m` and :math:`\mathbb{E}[Q(v)] = v` (unbiased; [P008]
    Lemma 3.1), with :math:`|Q(v_j) − v_j| < m/s`. On the wire: part ``codes`` (``uint8``, the
    ``b``-bit code ``s + sign(v_j) ℓ_j ∈ [0, 2s]`` of each entry, ``8/b`` codes per byte, low bits
    first, padding codes 0) and part ``scale`` (``float32``, one ``m`` per segment):
    ``⌈n b / 8⌉ · 8 + 32 · segments`` bits for ``n`` entries instead of ``32 n``.
``topk`` (:class:`TopK`) — top-k sparsification, [P009]
    The ``k = max(1, ⌈φ n⌉)`` entries of largest ``|v_j|`` (``φ = k_fraction``), in ascending index
    order: part ``index`` (``uint32``, strictly increasing) and part ``value`` (``float32``):
    ``64 k`` bits. Biased, so it is meant to run with error feedback.

**Error feedback** ([P009] Algorithm 1, "memory"): the device keeps a residual ``e`` per array and
sends ``C(e_t + Δ_t)``; the part the compressor dropped stays for the next round,

.. math::

    e_{t+1} = e_t + Δ_t − C(e_t + Δ_t),

so after ``T`` rounds ``Σ_t C(e_t + Δ_t) + e_T = Σ_t Δ_t``: nothing the device learned is lost,
only delayed. An array the device does not send in a round keeps its residual unchanged.
:func:`compress_arrays` returns the new residuals; where they are kept is the caller's (fedmoe's
devices: their local state, :mod:`fedmoe.federated.device_state`, which survives a resumed run).

**Checks** (:func:`decompress_arrays`, :func:`expected_parts`): the parts of every compressed array
have names, dtypes and shapes fixed by the array's size and segments (so "too many values" is a
wrong shape, refused from the metadata alone); then codes in ``[0, 2s]`` and zero padding; scales
finite and ``≥ 0``; indices ``< n`` and strictly increasing (so unique); values finite. An array
sent in part (one part without the other) is refused. Each refusal is a one-line reason.

This module needs numpy only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fedmoe.registry import Registry

__all__ = ["COMPRESSORS", "PART_SEPARATOR", "Compressor", "StochasticQuantiser", "TopK", "compress_arrays",
           "compressed_bits", "decompress_arrays", "expected_parts", "make_compressor", "part_key", "split_key"]

PART_SEPARATOR = "#"
"""Between an array's name and its part's in a message: ``"expert/3#codes"``."""


def part_key(name: str, part: str) -> str:
    """The message key of ``part`` of the compressed array ``name``."""
    return f"{name}{PART_SEPARATOR}{part}"


def split_key(key: str) -> tuple[str, str | None]:
    """``(array name, part)`` of a message key; ``(key, None)`` for an array sent as it is."""
    name, sep, part = key.rpartition(PART_SEPARATOR)
    return (name, part) if sep else (key, None)


def _segment_ids(size: int, segments: Sequence[int]) -> np.ndarray:
    """For each of ``size`` entries, the index of its segment (``segments``: their lengths, summing to ``size``)."""
    return np.repeat(np.arange(len(segments)), np.asarray(segments, dtype=np.int64)) if len(segments) \
        else np.zeros(size, dtype=np.int64)


class Compressor(ABC):
    """One way to compress a flat float array (module docstring). Subclasses give the parts' layout,
    the encoder, the decoder and the value checks."""

    name: str = ""

    @abstractmethod
    def parts(self, size: int, segments: Sequence[int]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """``{part: (dtype, shape)}`` of the compressed form of ``size`` entries in segments of ``segments``."""

    @abstractmethod
    def encode(self, values: np.ndarray, segments: Sequence[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The parts of the flat ``values``."""

    @abstractmethod
    def decode(self, parts: Mapping[str, np.ndarray], size: int, segments: Sequence[int]) -> np.ndarray:
        """The flat float32 values the (checked) ``parts`` stand for."""

    @abstractmethod
    def check(self, parts: Mapping[str, np.ndarray], size: int, segments: Sequence[int]) -> str | None:
        """The reason the values of ``parts`` (of the right dtypes and shapes) are unacceptable, or ``None``."""

    def bits(self, size: int, segments: Sequence[int]) -> int:
        """Bits of the compressed form on the wire (every part at its own width)."""
        parts = self.parts(size, segments).values()
        return sum(math.prod(shape) * np.dtype(dtype).itemsize * 8 for dtype, shape in parts)


@dataclass(frozen=True)
class StochasticQuantiser(Compressor):
    """Unbiased ``bits``-bit stochastic quantisation per segment ([P008]; module docstring, ``qsgd``)."""

    bits_per_entry: int = 8
    name = "qsgd"

    def __post_init__(self) -> None:
        if self.bits_per_entry not in (2, 4, 8):
            raise ValueError(f"qsgd: bits must be 2, 4 or 8, got {self.bits_per_entry}")

    @property
    def levels(self) -> int:
        """``s = 2^{b−1} − 1``: the levels on each side of zero."""
        return 2 ** (self.bits_per_entry - 1) - 1

    @property
    def per_byte(self) -> int:
        return 8 // self.bits_per_entry

    def parts(self, size: int, segments: Sequence[int]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        return {"codes": (np.dtype(np.uint8), (-(-size // self.per_byte),)),
                "scale": (np.dtype(np.float32), (max(len(segments), 1),))}

    def encode(self, values: np.ndarray, segments: Sequence[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        seg = _segment_ids(v.size, segments)
        scale = np.zeros(max(len(segments), 1), dtype=np.float64)
        np.maximum.at(scale, seg, np.abs(v))
        scale = scale.astype(np.float32)  # m of each segment, exactly as the server will read it
        m = scale.astype(np.float64)[seg]
        s = self.levels
        ratio = np.divide(np.abs(v) * s, m, out=np.zeros_like(v), where=m > 0)
        level = np.floor(np.minimum(ratio, s) + rng.random(v.size))  # E[level] = ratio: unbiased
        level = np.minimum(level, s)
        codes = (s + np.sign(v) * level).astype(np.uint8)
        return {"codes": self._pack(codes), "scale": scale}

    def decode(self, parts: Mapping[str, np.ndarray], size: int, segments: Sequence[int]) -> np.ndarray:
        codes = self._unpack(parts["codes"], size).astype(np.float64)
        m = np.asarray(parts["scale"], dtype=np.float64)[_segment_ids(size, segments)]
        return (m * (codes - self.levels) / self.levels).astype(np.float32)

    def check(self, parts: Mapping[str, np.ndarray], size: int, segments: Sequence[int]) -> str | None:
        scale = parts["scale"]
        if not np.isfinite(scale).all() or (scale < 0).any():
            return "scale is not finite and non-negative"
        codes = self._unpack(parts["codes"], parts["codes"].size * self.per_byte)
        if codes[:size].max(initial=0) > 2 * self.levels:
            return f"a code exceeds {2 * self.levels} (the {self.bits_per_entry}-bit range)"
        if codes[size:].any():
            return "padding codes are not zero"
        return None

    def _pack(self, codes: np.ndarray) -> np.ndarray:
        b, per = self.bits_per_entry, self.per_byte
        padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
        padded[:codes.size] = codes
        lanes = padded.reshape(-1, per).astype(np.uint16) << (b * np.arange(per, dtype=np.uint16))
        return lanes.sum(axis=1).astype(np.uint8)

    def _unpack(self, packed: np.ndarray, size: int) -> np.ndarray:
        b, per = self.bits_per_entry, self.per_byte
        shifts = b * np.arange(per, dtype=np.uint8)
        lanes = (np.asarray(packed, dtype=np.uint8)[:, None] >> shifts) & np.uint8((1 << b) - 1)
        return lanes.reshape(-1)[:size]


@dataclass(frozen=True)
class TopK(Compressor):
    """The ``k = max(1, ⌈φ n⌉)`` entries of largest magnitude ([P009]; module docstring, ``topk``)."""

    k_fraction: float = 0.1
    name = "topk"

    def __post_init__(self) -> None:
        if not 0.0 < self.k_fraction <= 1.0:
            raise ValueError(f"topk: k_fraction must be in (0, 1], got {self.k_fraction}")

    def k(self, size: int) -> int:
        """Entries kept of ``size``."""
        return min(size, max(1, math.ceil(self.k_fraction * size)))

    def parts(self, size: int, segments: Sequence[int]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        k = self.k(size)
        return {"index": (np.dtype(np.uint32), (k,)), "value": (np.dtype(np.float32), (k,))}

    def encode(self, values: np.ndarray, segments: Sequence[int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        k = self.k(v.size)
        index = np.sort(np.argpartition(-np.abs(v), k - 1)[:k]) if k < v.size else np.arange(v.size)
        return {"index": index.astype(np.uint32), "value": v[index]}

    def decode(self, parts: Mapping[str, np.ndarray], size: int, segments: Sequence[int]) -> np.ndarray:
        out = np.zeros(size, dtype=np.float32)
        out[parts["index"].astype(np.int64)] = parts["value"]
        return out

    def check(self, parts: Mapping[str, np.ndarray], size: int, segments: Sequence[int]) -> str | None:
        index = parts["index"].astype(np.int64)
        if index.size and int(index.max()) >= size:
            return f"an index is {int(index.max())}, outside [0, {size})"
        if (np.diff(index) <= 0).any():
            return "indices are not strictly increasing (repeated or unsorted)"
        if not np.isfinite(parts["value"]).all():
            return "values hold NaN or Inf"
        return None


CompressorFactory = Callable[..., Compressor]
COMPRESSORS: Registry[CompressorFactory] = Registry("compressor")
"""Compressors by name: ``factory(**options) -> Compressor`` (options: ``bits``, ``k_fraction``)."""
COMPRESSORS.register("qsgd", lambda bits=8, **_: StochasticQuantiser(int(bits)))
COMPRESSORS.register("topk", lambda k_fraction=0.1, **_: TopK(float(k_fraction)))


def make_compressor(method: str, **options: Any) -> Compressor | None:
    """The compressor registered as ``method`` built with ``options``; ``None`` for ``"none"``."""
    return None if method == "none" else COMPRESSORS.get(method)(**options)


def compress_arrays(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], compressor: Compressor,
                    segments: Mapping[str, Sequence[int]] | None = None,
                    residual: Mapping[str, np.ndarray] | None = None, rng: np.random.Generator | None = None,
                    compressible: Callable[[str, np.ndarray], bool] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(message arrays, residuals)``: the float arrays of ``arrays`` sent as ``compressor``'s parts
    of their update against ``reference``, with error feedback when ``residual`` is given (module docstring).

    Parameters
    ----------
    arrays : Mapping[str, numpy.ndarray]
        What the device would send uncompressed.
    reference : Mapping[str, numpy.ndarray]
        What the server sent (same names): the update is ``arrays[k] − reference[k]``.
    compressor : Compressor
        How.
    segments : Mapping[str, Sequence[int]], optional
        Segment lengths of each array (default: one segment, the whole array).
    residual : Mapping[str, numpy.ndarray], optional
        The device's residuals ``e_t`` by array name (missing: zero). ``None``: no error feedback,
        and no residual is returned.
    rng : numpy.random.Generator, optional
        Randomness of a stochastic compressor.
    compressible : callable, optional
        ``compressible(name, array)``: which arrays to compress (default: floating arrays the
        reference has); the others are sent as they are.

    Returns
    -------
    tuple[dict, dict]
        The message's arrays, and ``e_{t+1}`` of each compressed array (with error feedback; the
        residuals of arrays not sent are the caller's to keep).
    """
    rng = rng if rng is not None else np.random.default_rng()
    segments = segments or {}
    keep = compressible or (lambda k, v: k in reference and np.issubdtype(np.asarray(v).dtype, np.floating))
    out: dict[str, np.ndarray] = {}
    new_residual: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        if not keep(name, value):
            out[name] = value
            continue
        flat = value.astype(np.float32).reshape(-1)
        target = flat - np.asarray(reference[name], dtype=np.float32).reshape(-1)
        if residual is not None and name in residual:
            target = target + np.asarray(residual[name], dtype=np.float32).reshape(-1)
        segs = segments.get(name, (flat.size,))
        parts = compressor.encode(target, segs, rng)
        out.update({part_key(name, p): v for p, v in parts.items()})
        if residual is not None:
            new_residual[name] = target - compressor.decode(parts, flat.size, segs)
    return out, new_residual


def expected_parts(compressor: Compressor | None, reference: Mapping[str, np.ndarray],
                   segments: Mapping[str, Sequence[int]] | None = None,
                   compressible: Callable[[str, np.ndarray], bool] | None = None) -> dict[str, np.ndarray]:
    """What a reply may carry, as arrays of the right dtype and shape (no memory: broadcast views): each
    compressible array of ``reference`` as its parts, the others as they are. The checks of
    :func:`fedmoe.plugins.validation.read_arrays` against it refuse a part of the wrong dtype or shape."""
    if compressor is None:
        return dict(reference)
    segments = segments or {}
    keep = compressible or (lambda k, v: np.issubdtype(np.asarray(v).dtype, np.floating))
    out: dict[str, np.ndarray] = {}
    for name, ref in reference.items():
        if not keep(name, ref):
            out[name] = ref
            continue
        for part, (dtype, shape) in compressor.parts(ref.size, segments.get(name, (ref.size,))).items():
            out[part_key(name, part)] = np.broadcast_to(np.zeros((), dtype=dtype), shape)
    return out


def decompress_arrays(received: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                      compressor: Compressor | None, segments: Mapping[str, Sequence[int]] | None = None
                      ) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(arrays, None)``: the reply's arrays with every compressed array decoded as ``reference + Δ̂``
    (reference's dtype and shape); else ``(None, reason)`` (module docstring, "Checks"). ``received``
    must already have passed the dtype and shape checks against :func:`expected_parts`."""
    if compressor is None:
        return dict(received), None
    segments = segments or {}
    grouped: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, np.ndarray] = {}
    for key, value in received.items():
        name, part = split_key(key)
        if part is None:
            out[key] = value
        else:
            grouped.setdefault(name, {})[part] = value
    for name, parts in grouped.items():
        ref = np.asarray(reference[name])
        segs = segments.get(name, (ref.size,))
        wanted = set(compressor.parts(ref.size, segs))
        if set(parts) != wanted:
            return None, f"array {name!r} is sent in part ({sorted(parts)}; {compressor.name} needs {sorted(wanted)})"
        reason = compressor.check(parts, ref.size, segs)
        if reason is not None:
            return None, f"array {name!r} ({compressor.name}): {reason}"
        delta = compressor.decode(parts, ref.size, segs)
        out[name] = (ref.reshape(-1).astype(np.float32) + delta).astype(ref.dtype).reshape(ref.shape)
    return out, None


def compressed_bits(compressor: Compressor | None, size: int, segments: Sequence[int] | None = None,
                    value_bits: int = 32) -> int:
    """Bits on the wire of an array of ``size`` entries: compressed by ``compressor``, or ``value_bits`` each."""
    if compressor is None:
        return size * value_bits
    return compressor.bits(size, segments if segments is not None else (size,))
