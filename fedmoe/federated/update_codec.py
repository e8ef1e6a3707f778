"""Compressed updates of the mixture (``federated.compression``): which arrays a device compresses, with
which segments, where it keeps its residuals, and what the server expects back.

The compressors and the wire format are :mod:`fedmoe.plugins.compression`'s; this module applies them
to fedmoe's packed groups (:class:`fedmoe.federated.parameters.PackedLayout`): every packed group a
device uploads (``"shared"``, ``"expert/<i>"`` of each expert it trained) is one compressed array whose
segments are the group's state-dict entries (so :class:`~fedmoe.plugins.compression.StochasticQuantiser`
has one scale per weight matrix, bias or buffer). A group the device did not train is neither
compressed nor sent, and its residual waits on the device for the next round that trains it.

With error feedback the residual ``e`` of group ``g`` is kept in the device's local state under
``compression.residual.<g>`` (its ``context.state`` and, with a state folder, its ``.npz`` versions,
:mod:`fedmoe.federated.device_state`): it survives across rounds and a resumed run, never leaves the
device and is never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from fedmoe.config import CompressionConfig
from fedmoe.federated.parameters import LOCAL, PackedLayout
from fedmoe.plugins.compression import (
    Compressor,
    compress_arrays,
    compressed_bits,
    decompress_arrays,
    expected_parts,
)

RESIDUAL_PREFIX = "compression.residual."
"""Local-state keys of the error-feedback residuals: the prefix, then the group's name with ``/`` as ``.``."""


def residual_key(group: str) -> str:
    """The local-state key of ``group``'s residual."""
    return RESIDUAL_PREFIX + group.replace("/", ".")


@dataclass(frozen=True)
class UpdateCodec:
    """``federated.compression`` applied to a :class:`~fedmoe.federated.parameters.PackedLayout` (module docstring)."""

    layout: PackedLayout
    compressor: Compressor | None
    error_feedback: bool

    @classmethod
    def from_config(cls, layout: PackedLayout, cfg: CompressionConfig) -> "UpdateCodec":
        return cls(layout, cfg.compressor(), cfg.error_feedback)

    @property
    def segments(self) -> dict[str, list[int]]:
        """``{packed group: its entries' sizes}`` (local groups never travel)."""
        return {g: [e[2].stop - e[2].start for e in self.layout.entries(g)] for g in self.layout.packed if g != LOCAL}

    def compressible(self, key: str, _value: np.ndarray | None = None) -> bool:
        """Whether the message key ``key`` is a group this codec compresses."""
        return self.compressor is not None and key in self.layout.packed and key != LOCAL

    def encode(self, wire: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
               local_state: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The message arrays of a device's packed ``wire`` against the packed global ``reference``;
        with error feedback, ``local_state``'s residuals are read and updated in place."""
        if self.compressor is None:
            return dict(wire)
        residual = None
        if self.error_feedback:
            residual = {g: local_state[residual_key(g)] for g in wire if residual_key(g) in local_state}
        out, new = compress_arrays(wire, reference, self.compressor, self.segments, residual, rng, self.compressible)
        if self.error_feedback:
            local_state.update({residual_key(g): e.astype(np.float32) for g, e in new.items()})
        return out

    def expected(self, sent: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """What a reply may carry against the packed arrays ``sent``
        (:func:`~fedmoe.plugins.compression.expected_parts`)."""
        return expected_parts(self.compressor, sent, self.segments, self.compressible)

    def decode(self, received: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]
               ) -> tuple[dict[str, np.ndarray] | None, str | None]:
        """The packed arrays a checked reply stands for, or ``(None, reason)``
        (:func:`~fedmoe.plugins.compression.decompress_arrays`)."""
        return decompress_arrays(received, sent, self.compressor, self.segments)

    def group_bits(self, group: str) -> float:
        """Bits of ``group`` on the uplink: compressed, or every entry at its dtype's width."""
        keys = self.layout.groups.get(group, [])
        if group in self.layout.packed and self.compressible(group):
            segs = self.segments[group]
            return float(compressed_bits(self.compressor, sum(segs), segs))
        return float(sum(int(np.prod(self.layout.shapes[k], dtype=np.int64)) * self.layout.dtypes[k].itemsize * 8
                         for k in keys))
