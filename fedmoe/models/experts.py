"""Modality experts (encoders), registered by architecture name, with counted costs.

[P000] (multimodal MoE for ISAC in low-altitude networks) gives every modality its
own experts with an architecture suited to it — a ResNet for images, a point/scan
network for lidar, a map encoder for radar — three per modality, 15 in all, of which a
sparse gate activates a few. :func:`default_expert_specs` builds that layout with
three widths per modality, sized for a CPU. [P001] (§II-B, eq. 8) lets an expert read
a *subset* of the modalities, ``E_i(x_i)`` with ``x_i ⊆ x`` (up to ``2^M − 1`` experts);
the ``subset_mlp`` architecture does that for the small vector modalities (GPS + RF) and
``subset_fusion`` for any modalities (one encoder per modality, fused inside the expert).

Inputs
------
An expert receives a dict ``modality -> (B, *shape)`` tensor and reads only its own
modalities. A ``uint8`` input (the raw camera image) is converted to float and scaled to
``[0, 1]`` inside the expert; any other input is used as given, as float32, and the
**caller standardises it** per feature: inside a mixture,
:class:`fedmoe.models.moe.Standardiser` does so for every modality (camera included,
so there the camera already arrives as a standardised float). Experts hold no
normalisation statistics and no batch norm: they run on arbitrary sub-batches (a
single row when one sample selects them) and are averaged across clients.

Every expert checks the shape of what it receives and raises a ``ValueError`` naming
itself, the modality, the expected and the actual shape.

Costs
-----
:func:`expert_costs` (from :mod:`fedmoe.models.cost`) counts each expert's FLOPs per
sample with ``torch.utils.flop_counter.FlopCounterMode`` — matmuls and convolutions at
2 FLOPs per multiply–add, element-wise operations ignored — and reports its parameter
count and the uplink bits of its input.

Adding an architecture
----------------------
Register a factory ``(modalities, input_shapes, out_dim, width, *, name=None) -> Expert``::

    @ARCHITECTURES.register("my_arch")
    def my_arch(modalities, input_shapes, out_dim, width, *, name=None):
        ...
        return Expert(name or "my_arch", modalities, input_shapes, out_dim, body, architecture="my_arch")

and name it in an :class:`ExpertSpec`.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from fedmoe.config import MODALITIES, StrictModel, distinct_modalities
from fedmoe.models.cost import ExpertCost, count_flops, expert_costs
from fedmoe.registry import Registry

__all__ = [
    "ARCHITECTURES", "DEFAULT_ARCHITECTURE", "DEFAULT_WIDTHS", "Expert", "ExpertCost", "ExpertFactory", "ExpertSpec",
    "FusionExpert", "build_experts", "count_flops", "default_expert_specs", "expert_costs", "subset_architecture",
]

Shapes = dict[str, tuple[int, ...]]


class Expert(nn.Module):
    """An encoder of one or more modalities into an ``out_dim`` feature vector ``z_d``.

    Parameters
    ----------
    name
        Unique name within a mixture (e.g. ``"camera_s"``); used in every error message.
    modalities
        Modalities the expert reads, in the order they are concatenated.
    input_shapes
        Shape of one sample of each modality (no batch axis); extra modalities are ignored.
    out_dim
        Size of the output feature.
    body
        Module mapping the prepared input to ``(B, out_dim)``: the single modality's
        tensor ``(B, *shape)`` for a one-modality expert, else the flattened modalities
        concatenated along axis 1.
    architecture
        Registry name of the architecture that built it (informational).
    """

    def __init__(self, name: str, modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int,
                 body: nn.Module, architecture: str = "") -> None:
        super().__init__()
        self.name: str = str(name)
        self.modalities: tuple[str, ...] = tuple(modalities)
        if not self.modalities:
            raise ValueError(f"expert {self.name!r}: needs at least one modality")
        missing = [m for m in self.modalities if m not in input_shapes]
        if missing:
            raise ValueError(f"expert {self.name!r}: no input shape given for modalities {missing}")
        self.input_shapes: Shapes = {m: tuple(int(d) for d in input_shapes[m]) for m in self.modalities}
        self.out_dim: int = int(out_dim)
        self.architecture: str = architecture
        self.body = body

    @property
    def shapes(self) -> Shapes:
        """Alias of :attr:`input_shapes`."""
        return self.input_shapes

    def _prepare(self, m: str, x: torch.Tensor) -> torch.Tensor:
        expected = self.input_shapes[m]
        if tuple(x.shape[1:]) != expected or x.dim() != len(expected) + 1:
            raise ValueError(f"expert {self.name!r}: input {m!r} has shape {tuple(x.shape[1:])} per sample, "
                             f"expected {expected}")
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encode ``inputs`` (modality -> ``(B, *shape)``) into ``(B, out_dim)``.

        Only :attr:`modalities` are read; ``uint8`` inputs are scaled to ``[0, 1]``.
        """
        parts = []
        for m in self.modalities:
            if m not in inputs:
                raise ValueError(f"expert {self.name!r}: input {m!r} missing (got {sorted(inputs)})")
            parts.append(self._prepare(m, inputs[m]))
        if len(parts) == 1:
            return self.body(parts[0])
        self._check_same_batch(parts)
        return self.body(torch.cat([p.flatten(1) for p in parts], dim=1))

    def _check_same_batch(self, parts: Sequence[torch.Tensor]) -> None:
        """Raise if the per-modality tensors ``parts`` (in :attr:`modalities` order) differ in batch size."""
        if len({p.shape[0] for p in parts}) != 1:
            raise ValueError(f"expert {self.name!r}: inputs have different batch sizes "
                             f"{dict(zip(self.modalities, (p.shape[0] for p in parts)))}")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, modalities={self.modalities}, out_dim={self.out_dim}"


class ExpertFactory(Protocol):
    """``(modalities, input_shapes, out_dim, width, *, name=None) -> Expert``."""

    def __call__(self, modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
                 *, name: str | None = None) -> Expert: ...


ARCHITECTURES: Registry[ExpertFactory] = Registry("expert architecture")
"""Architecture name -> :class:`ExpertFactory`."""


# --------------------------------------------------------------------------- helpers


def _check_args(arch: str, name: str, modalities: Sequence[str], input_shapes: dict, out_dim: int, width: int) -> None:
    if not modalities:
        raise ValueError(f"expert {name!r} ({arch}): needs at least one modality")
    if len(set(modalities)) != len(modalities):
        raise ValueError(f"expert {name!r} ({arch}): modalities repeat: {list(modalities)}")
    missing = [m for m in modalities if m not in input_shapes]
    if missing:
        raise ValueError(f"expert {name!r} ({arch}): no input shape given for modalities {missing}")
    if int(out_dim) < 1 or int(width) < 1:
        raise ValueError(f"expert {name!r} ({arch}): out_dim and width must be >= 1, got {out_dim} and {width}")


def _single(arch: str, name: str, modalities: Sequence[str], input_shapes: dict,
            ranks: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the one modality of a single-modality architecture, checked to have a rank in ``ranks``."""
    if len(modalities) != 1:
        raise ValueError(f"expert {name!r} ({arch}): reads exactly one modality, got {list(modalities)}")
    m = modalities[0]
    shape = tuple(int(d) for d in input_shapes[m])
    if len(shape) not in ranks:
        want = " or ".join(f"{r}-D" for r in ranks)
        raise ValueError(f"expert {name!r} ({arch}): input {m!r} must be {want} per sample, got shape {shape}")
    return shape


def _down(n: int, times: int = 1) -> int:
    """Length after ``times`` stride-2 convolutions with ``padding = kernel // 2`` (odd kernels)."""
    for _ in range(times):
        n = (n + 1) // 2
    return n


class _BasicBlock(nn.Module):
    """ResNet basic block without batch norm: ``relu(conv3x3(relu(conv3x3_s(x))) + shortcut(x))``.

    The shortcut is the identity when shape is kept, else a strided 1x1 convolution
    (He et al., 2016, option B).
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else nn.Conv2d(c_in, c_out, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


def mlp_layers(d_in: int, width: int, out_dim: int) -> nn.Sequential:
    """``Linear(d_in, w) → ReLU → Linear(w, w) → ReLU → Linear(w, out_dim)`` on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, out_dim))


# --------------------------------------------------------------------------- architectures

CAMERA_GRID = 4
"""Side of the spatial grid the camera expert keeps before its linear layer."""


@ARCHITECTURES.register("camera_resnet")
def camera_resnet(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
                  *, name: str | None = None) -> Expert:
    """Small ResNet for images ([P000]: ResNet image experts), sized for a CPU.

    ``(C, H, W)`` → stem ``conv3x3/2 (w)`` → stage 1: basic block ``/2`` (``w``) →
    stage 2: basic block ``/2`` (``2w``) → a ``CAMERA_GRID × CAMERA_GRID`` grid
    (adaptive average pooling, only when the map is larger) → flatten → linear.
    There is no global pooling: the flattened grid keeps *where* in the image a feature
    is, i.e. the angle of the user or reflector seen from the camera, which the beam
    depends on. A 32×32 RGB image reaches the 4×4 grid by the strides alone and costs
    ``13824·w + 4224·w² + 64·w·out_dim`` FLOPs per sample (w=24, out_dim=32: 2.81 M).
    """
    name = name or "camera_resnet"
    _check_args("camera_resnet", name, modalities, input_shapes, out_dim, width)
    c, h, w = _single("camera_resnet", name, modalities, input_shapes, (3,))
    gh, gw = min(CAMERA_GRID, _down(h, 3)), min(CAMERA_GRID, _down(w, 3))
    body = nn.Sequential(
        nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
        _BasicBlock(width, width, stride=2),
        _BasicBlock(width, 2 * width, stride=2),
        *([nn.AdaptiveAvgPool2d((gh, gw))] if (_down(h, 3), _down(w, 3)) != (gh, gw) else []),
        nn.Flatten(), nn.Linear(2 * width * gh * gw, out_dim))
    return Expert(name, modalities, input_shapes, out_dim, body, architecture="camera_resnet")


@ARCHITECTURES.register("radar_conv")
def radar_conv(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
               *, name: str | None = None) -> Expert:
    """2-D CNN for radar range–angle maps ``(C, R, A)`` (e.g. power and velocity channels).

    ``conv3x3/2 (w)`` → ``conv3x3/2 (2w)`` → flatten → linear: the flattened
    ``(R/4) × (A/4)`` grid keeps range and angle bins apart (no global pooling).
    """
    name = name or "radar_conv"
    _check_args("radar_conv", name, modalities, input_shapes, out_dim, width)
    c, r, a = _single("radar_conv", name, modalities, input_shapes, (3,))
    body = nn.Sequential(nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * width * _down(r, 2) * _down(a, 2), out_dim))
    return Expert(name, modalities, input_shapes, out_dim, body, architecture="radar_conv")


@ARCHITECTURES.register("lidar_conv1d")
def lidar_conv1d(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
                 *, name: str | None = None) -> Expert:
    """1-D CNN for lidar range scans ``(L,)`` or ``(C, L)`` (a scan per elevation channel).

    [P000] uses a point-cloud network for lidar; our lidar is an ordered range scan,
    so a 1-D convolution over the bearing axis plays that role. ``conv5/2 (w)`` →
    ``conv5/2 (w)`` → flatten (bearing preserved) → linear.
    """
    name = name or "lidar_conv1d"
    _check_args("lidar_conv1d", name, modalities, input_shapes, out_dim, width)
    shape = _single("lidar_conv1d", name, modalities, input_shapes, (1, 2))
    c, n = (1, shape[0]) if len(shape) == 1 else shape
    body = nn.Sequential(*([nn.Unflatten(1, (1, n))] if len(shape) == 1 else []),
                         nn.Conv1d(c, width, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv1d(width, width, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(width * _down(n, 2), out_dim))
    return Expert(name, modalities, input_shapes, out_dim, body, architecture="lidar_conv1d")


def _vector_mlp(arch: str, modalities: Sequence[str], input_shapes: dict, out_dim: int, width: int,
                name: str | None, single: bool) -> Expert:
    name = name or arch
    _check_args(arch, name, modalities, input_shapes, out_dim, width)
    if single:
        _single(arch, name, modalities, input_shapes, (1,))
    for m in modalities:
        shape = tuple(input_shapes[m])
        if len(shape) != 1:
            raise ValueError(f"expert {name!r} ({arch}): input {m!r} must be a 1-D vector per sample, "
                             f"got shape {shape}")
    d = int(sum(np.prod(input_shapes[m]) for m in modalities))
    return Expert(name, modalities, input_shapes, out_dim, mlp_layers(d, width, out_dim), architecture=arch)


@ARCHITECTURES.register("gps_mlp")
def gps_mlp(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
            *, name: str | None = None) -> Expert:
    """MLP for the position fix (one 1-D modality): two hidden ReLU layers of ``width``.

    FLOPs per sample ``2·(d·w + w·w + w·out_dim)`` (``d`` = 6 for the GPS fix pair).
    """
    return _vector_mlp("gps_mlp", modalities, input_shapes, out_dim, width, name, single=True)


@ARCHITECTURES.register("rf_mlp")
def rf_mlp(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
           *, name: str | None = None) -> Expert:
    """MLP for RF measurements (wide-beam powers; one 1-D modality), as :func:`gps_mlp`."""
    return _vector_mlp("rf_mlp", modalities, input_shapes, out_dim, width, name, single=True)


@ARCHITECTURES.register("subset_mlp")
def subset_mlp(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
               *, name: str | None = None) -> Expert:
    """Modality-subset expert ``E_i(x_i)`` of [P001] (§II-B, eq. 8) for 1-D modalities.

    The vectors of its modalities (e.g. GPS and RF) are concatenated and encoded by the
    two-hidden-layer MLP of :func:`gps_mlp`; the gate may then pick one expert that
    reads a whole modality combination.
    """
    return _vector_mlp("subset_mlp", modalities, input_shapes, out_dim, width, name, single=False)


class FusionExpert(Expert):
    """A modality-subset expert that encodes each modality with its own encoder, then fuses.

    ``z = head(relu([enc_1(x_1), …, enc_k(x_k)]))``: late fusion *inside* one expert, so a
    hard gate that picks this expert computes every encoder of the subset and nothing else.
    """

    def __init__(self, name: str, modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int,
                 encoders: dict[str, Expert], head: nn.Module, architecture: str = "subset_fusion") -> None:
        super().__init__(name, modalities, input_shapes, out_dim, head, architecture=architecture)
        self.encoders = nn.ModuleDict(encoders)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise ValueError(f"expert {self.name!r}: inputs {missing} missing (got {sorted(inputs)})")
        parts = [self.encoders[m]({m: inputs[m]}) for m in self.modalities]
        self._check_same_batch(parts)
        return self.body(torch.relu(torch.cat(parts, dim=1)))


@ARCHITECTURES.register("subset_fusion")
def subset_fusion(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
                  *, name: str | None = None) -> Expert:
    """Modality-subset expert ``E_i(x_i)`` of [P001] (§II-B, eq. 8) for modalities of any shape.

    Each modality gets its :data:`DEFAULT_ARCHITECTURE` encoder of width ``width`` and
    output ``out_dim``; the concatenated encodings pass a ReLU and a linear layer to
    ``out_dim``. This is how one expert covers e.g. GPS + RF + radar, the combination a
    DynMM-style hard gate ([P001]) picks for blocked users. FLOPs: the encoders' sum
    plus ``2·k·out_dim²``.
    """
    name = name or "subset_fusion"
    _check_args("subset_fusion", name, modalities, input_shapes, out_dim, width)
    unknown = [m for m in modalities if m not in DEFAULT_ARCHITECTURE]
    if unknown:
        raise ValueError(f"expert {name!r} (subset_fusion): no default encoder for modalities {unknown}; "
                         f"known: {list(DEFAULT_ARCHITECTURE)}")
    encoders = {m: ARCHITECTURES.get(DEFAULT_ARCHITECTURE[m])((m,), input_shapes, out_dim, width, name=f"{name}/{m}")
                for m in modalities}
    head = nn.Linear(len(modalities) * out_dim, out_dim)
    return FusionExpert(name, modalities, input_shapes, out_dim, encoders, head)


# Generic architectures of the first version, kept (unchanged) for existing configs and
# tests. Unlike the ones above they end in a ReLU.

class _Residual(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


@ARCHITECTURES.register("conv2d")
def conv2d_expert(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
                  *, name: str | None = None) -> Expert:
    """Generic residual CNN for ``(C, H, W)`` maps: stride-2 stem, one residual block,
    stride-2 conv, flattened (no global pooling), linear, ReLU."""
    name = name or "conv2d"
    _check_args("conv2d", name, modalities, input_shapes, out_dim, width)
    c, h, w = _single("conv2d", name, modalities, input_shapes, (3,))
    body = nn.Sequential(
        nn.Conv2d(c, width, 3, stride=2, padding=1), nn.ReLU(),
        _Residual(nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                nn.Conv2d(width, width, 3, padding=1))),
        nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(width * _down(h, 2) * _down(w, 2), out_dim), nn.ReLU())
    return Expert(name, modalities, input_shapes, out_dim, body, architecture="conv2d")


@ARCHITECTURES.register("conv1d")
def conv1d_expert(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
                  *, name: str | None = None) -> Expert:
    """Generic 1-D CNN for ``(L,)`` scans: two stride-2 convolutions, flattened, linear, ReLU."""
    name = name or "conv1d"
    _check_args("conv1d", name, modalities, input_shapes, out_dim, width)
    (n,) = _single("conv1d", name, modalities, input_shapes, (1,))
    body = nn.Sequential(nn.Unflatten(1, (1, n)), nn.Conv1d(1, width, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv1d(width, width, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(width * _down(n, 2), out_dim), nn.ReLU())
    return Expert(name, modalities, input_shapes, out_dim, body, architecture="conv1d")


@ARCHITECTURES.register("mlp")
def mlp_expert(modalities: Sequence[str], input_shapes: dict[str, Sequence[int]], out_dim: int, width: int,
               *, name: str | None = None) -> Expert:
    """Generic MLP on the flattened, concatenated inputs (any shapes): two hidden layers, ReLU output."""
    name = name or "mlp"
    _check_args("mlp", name, modalities, input_shapes, out_dim, width)
    d = int(sum(np.prod(input_shapes[m]) for m in modalities))
    body = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, out_dim), nn.ReLU())
    return Expert(name, modalities, input_shapes, out_dim, body, architecture="mlp")


# --------------------------------------------------------------------------- specs


class ExpertSpec(StrictModel):
    """One expert of a mixture, as configured.

    Attributes
    ----------
    name
        Unique name (e.g. ``"camera_s"``).
    architecture
        A name in :data:`ARCHITECTURES` (checked when built, so plugins may register later).
    modalities
        Known modalities (:data:`fedmoe.config.MODALITIES`) the expert reads, no repeats.
    width
        Channel / hidden width; FLOPs grow with it.
    """

    name: str = Field(..., min_length=1)
    architecture: str = Field(..., min_length=1)
    modalities: tuple[str, ...] = Field(..., min_length=1)
    width: int = Field(16, ge=1, le=4096)

    @field_validator("modalities")
    @classmethod
    def _known_modalities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in v if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
        return distinct_modalities(v)


DEFAULT_ARCHITECTURE: dict[str, str] = {"camera": "camera_resnet", "lidar": "lidar_conv1d", "radar": "radar_conv",
                                        "gps": "gps_mlp", "rf": "rf_mlp"}
"""Default architecture per modality ([P000]: an architecture suited to each modality)."""

DEFAULT_WIDTHS: dict[str, tuple[int, int, int]] = {
    "camera_resnet": (8, 16, 24),  # 0.4 / 1.3 / 2.8 MFLOPs per 32x32 image: well under 5 M on a CPU
    "radar_conv": (8, 16, 32),
    "lidar_conv1d": (8, 16, 32),
    "gps_mlp": (16, 32, 64),
    "rf_mlp": (16, 32, 64),
    "subset_mlp": (16, 32, 64),
    "subset_fusion": (16, 24, 32),
}
"""Small / medium / large width of each default architecture."""

SIZES = ("s", "m", "l")


def subset_architecture(modalities: Sequence[str]) -> str:
    """``"subset_mlp"`` when every modality is a small vector (GPS, RF), else ``"subset_fusion"``."""
    vector = all(DEFAULT_ARCHITECTURE.get(m, "").endswith("_mlp") for m in modalities)
    return "subset_mlp" if vector else "subset_fusion"


def default_expert_specs(num_per_modality: int = 3, modalities: Sequence[str] = MODALITIES,
                         subsets: Sequence[Sequence[str]] = (),
                         widths: Mapping[str, Sequence[int]] | None = None) -> list[ExpertSpec]:
    """``num_per_modality`` experts of increasing width per modality ([P000]: 3 × 5 = 15).

    Parameters
    ----------
    num_per_modality
        1, 2 or 3: the small, medium and large widths of :data:`DEFAULT_WIDTHS`, named
        ``"<modality>_s"``, ``"_m"``, ``"_l"``.
    modalities
        Modalities to cover, each with its :data:`DEFAULT_ARCHITECTURE`.
    subsets
        Optional modality subsets ([P001]), e.g. ``[("gps", "rf")]``: each adds
        ``num_per_modality`` experts named ``"gps+rf_s"`` etc., of architecture
        :func:`subset_architecture` (``subset_mlp`` for vector modalities only, else
        ``subset_fusion``).
    widths
        Optional widths by group name (a modality, or a subset joined by ``+`` such as
        ``"gps+rf"``), overriding :data:`DEFAULT_WIDTHS` for that group's experts: a
        cheap modality may deserve a network as wide as a costly one.

    Returns
    -------
    list of ExpertSpec
    """
    if not 1 <= num_per_modality <= len(SIZES):
        raise ValueError(f"num_per_modality must be 1, 2 or 3, got {num_per_modality}")
    unknown = [m for m in modalities if m not in DEFAULT_ARCHITECTURE]
    if unknown:
        raise ValueError(f"no default expert architecture for modalities {unknown}; "
                         f"known: {list(DEFAULT_ARCHITECTURE)}")
    groups = [((m,), m, DEFAULT_ARCHITECTURE[m]) for m in modalities]
    groups += [(tuple(s), "+".join(s), subset_architecture(s)) for s in subsets]
    widths = dict(widths or {})
    unknown = sorted(set(widths) - {label for _, label, _ in groups})
    if unknown:
        raise ValueError(f"widths given for {unknown}, which are not expert groups here "
                         f"({[label for _, label, _ in groups]})")
    return [ExpertSpec(name=f"{label}_{size}", architecture=arch, modalities=mods, width=width)
            for mods, label, arch in groups
            for size, width in zip(SIZES[:num_per_modality],
                                   tuple(widths.get(label, DEFAULT_WIDTHS[arch]))[:num_per_modality])]


def build_experts(specs: Sequence[ExpertSpec], input_shapes: dict[str, Sequence[int]], out_dim: int) -> nn.ModuleList:
    """Instantiate ``specs`` for inputs of ``input_shapes`` (per modality, no batch axis).

    Parameters
    ----------
    specs
        Expert specifications; names must be unique.
    input_shapes
        Modality -> shape of one sample, e.g. ``{m: a.shape[1:] for m, a in samples.inputs.items()}``.
    out_dim
        Output size shared by all experts (fusion sums their outputs).

    Returns
    -------
    torch.nn.ModuleList of Expert

    Raises
    ------
    fedmoe.registry.UnknownNameError
        An unknown architecture (the message lists the known ones).
    ValueError
        Duplicate names, a modality without a shape, or a shape the architecture cannot read.
    """
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"expert names must be unique, got {names}")
    experts = []
    for s in specs:
        missing = [m for m in s.modalities if m not in input_shapes]
        if missing:
            raise ValueError(f"expert {s.name!r}: no input shape for modalities {missing}")
        factory = ARCHITECTURES.get(s.architecture)
        experts.append(factory(s.modalities, input_shapes, out_dim, s.width, name=s.name))
    return nn.ModuleList(experts)

