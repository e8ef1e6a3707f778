"""Feature links: what a feature vector looks like after crossing a wireless link, and what the
crossing costs.

Split learning and the distributed-expert mode ([P004]) send intermediate features
``z ∈ R^D`` (smashed activations) over a noisy link. Two link models, registered by name
in :data:`LINKS`:

``analog``
    Uncoded analog transmission ([P004], "analog communication"): the transmitter
    scales ``z`` to unit power per entry, the receiver equalises and rescales, so

    .. math::  \\hat z = z + \\sqrt{P_z}\\,\\tilde\\sigma\\,\\varepsilon,
               \\qquad \\tilde\\sigma^2 = \\frac{\\sigma^2}{p |h|^2} = \\frac{1}{\\mathrm{SNR}},
               \\qquad \\varepsilon \\sim \\mathcal N(0, I)

    with ``P_z`` the mean power of the entries of ``z`` (its scale travels as side
    information) and ``SNR = p|h|²/σ²`` the link's instantaneous SNR. Relative
    distortion ``E||ẑ − z||² / E||z||² = 1/SNR``. One real entry per real channel use:
    ``D/2`` complex symbols, ``D / (2B)`` seconds on bandwidth ``B``.

``digital``
    Quantise each entry to ``bits`` bits (uniform, on ``[−c√P_z, c√P_z]`` with
    ``c = clip``; the scale travels as one float32), send the ``D·bits + 32`` bits with
    Gray-coded square M-QAM at ``log2 M = bits_per_symbol``, and flip each bit with the
    uncoded M-QAM bit-error rate

    .. math::  p_b(\\mathrm{SNR}) \\approx \\frac{4}{\\log_2 M}\\Bigl(1 - \\frac{1}{\\sqrt M}\\Bigr)
               Q\\!\\left(\\sqrt{\\frac{3\\,\\mathrm{SNR}}{M - 1}}\\right)

    (Proakis, *Digital Communications*, 5th ed., eq. 4.3-30 with Gray coding). Relative
    distortion: quantisation ``Δ²/12`` plus bit flips, ``Σ_j p_b (2^j Δ)² = p_b Δ²(4^b − 1)/3``
    (:meth:`DigitalLink.distortion`; clipping beyond ``c`` is not counted there).
    ``(D·bits + 32) / (B log2 M)`` seconds on bandwidth ``B``.

Both expose ``distortion(snr)`` (expected relative distortion, what a channel-aware
gate is told), ``corrupt(z, snr, generator)`` and ``airtime_s(dim, bandwidth_hz)``.
SNRs are linear (not dB) and broadcast against ``z.shape[:-1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from fedmoe.registry import Registry


class FeatureLink(Protocol):
    """What every link model provides (module docstring)."""

    name: str

    def distortion(self, snr: torch.Tensor) -> torch.Tensor:
        """Expected ``E||ẑ − z||² / E||z||²`` at linear ``snr``."""

    def corrupt(self, z: torch.Tensor, snr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z`` (..., D) after the link at linear ``snr`` (...)."""

    def airtime_s(self, dim: int, bandwidth_hz: float) -> float:
        """Seconds on the air for one ``dim``-entry feature vector on ``bandwidth_hz``."""


LINKS: Registry[type] = Registry("feature link")


def _check_snr(snr: torch.Tensor) -> torch.Tensor:
    snr = torch.as_tensor(snr, dtype=torch.float32)
    if bool((snr < 0).any()) or bool(torch.isnan(snr).any()):
        raise ValueError("SNR must be linear and non-negative (convert dB with fedmoe.wireless.ofdma.db_to_linear)")
    return snr


def _power(z: torch.Tensor) -> torch.Tensor:
    """(...,) mean power of the entries of each feature vector (at least a tiny positive number)."""
    return z.pow(2).mean(dim=-1).clamp_min(torch.finfo(z.dtype).tiny)


@LINKS.register("analog")
@dataclass(frozen=True)
class AnalogLink:
    """Uncoded analog feature transmission (module docstring; [P004])."""

    name: str = "analog"

    def distortion(self, snr: torch.Tensor) -> torch.Tensor:
        snr = _check_snr(snr)
        return 1.0 / snr.clamp_min(1e-12)

    def corrupt(self, z: torch.Tensor, snr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        snr = _check_snr(snr).to(z.device)
        std = torch.sqrt(_power(z) / snr.clamp_min(1e-12))
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return z + std.unsqueeze(-1) * noise

    def airtime_s(self, dim: int, bandwidth_hz: float) -> float:
        return dim / 2.0 / bandwidth_hz


def qam_bit_error_rate(snr: torch.Tensor, bits_per_symbol: int) -> torch.Tensor:
    """Uncoded Gray-coded square M-QAM bit-error rate at linear ``snr`` (module docstring);
    ``bits_per_symbol = 1`` or ``2`` is BPSK/QPSK, ``Q(√(2 SNR))`` per bit."""
    snr = _check_snr(snr)
    if bits_per_symbol <= 2:
        arg = torch.sqrt(2.0 * snr) if bits_per_symbol == 1 else torch.sqrt(snr)
        return 0.5 * torch.erfc(arg / math.sqrt(2.0))
    m = 2 ** bits_per_symbol
    q = 0.5 * torch.erfc(torch.sqrt(3.0 * snr / (m - 1)) / math.sqrt(2.0))
    return (4.0 / bits_per_symbol * (1 - 1 / math.sqrt(m)) * q).clamp(max=0.5)


@LINKS.register("digital")
@dataclass(frozen=True)
class DigitalLink:
    """Quantised features over M-QAM with residual bit errors (module docstring).

    Parameters
    ----------
    bits : int
        Quantiser bits per entry (1–16).
    clip : float
        Quantiser range in units of the vector's RMS.
    bits_per_symbol : int
        ``log2 M`` of the modulation (1: BPSK, 2: QPSK, 4: 16-QAM, 6: 64-QAM).
    """

    bits: int = 8
    clip: float = 3.0
    bits_per_symbol: int = 4
    name: str = "digital"

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"digital link: bits must be in [1, 16], got {self.bits}")
        if not self.clip > 0:
            raise ValueError(f"digital link: clip must be positive, got {self.clip}")
        if self.bits_per_symbol not in (1, 2, 4, 6, 8):
            raise ValueError(f"digital link: bits_per_symbol must be 1, 2, 4, 6 or 8, got {self.bits_per_symbol}")

    @property
    def _levels(self) -> int:
        return 2 ** self.bits

    def distortion(self, snr: torch.Tensor) -> torch.Tensor:
        step = 2 * self.clip / self._levels  # Δ in units of the RMS
        pb = qam_bit_error_rate(snr, self.bits_per_symbol)
        return step ** 2 / 12 + pb * step ** 2 * (4 ** self.bits - 1) / 3

    def corrupt(self, z: torch.Tensor, snr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        pb = qam_bit_error_rate(snr, self.bits_per_symbol).to(z.device)
        scale = torch.sqrt(_power(z)).unsqueeze(-1) * self.clip  # values in [−scale, scale]
        step = 2 * scale / self._levels
        code = torch.clamp(torch.floor((z + scale) / step), 0, self._levels - 1).to(torch.int64)
        flips = torch.rand((*z.shape, self.bits), generator=generator, device=z.device) < pb[..., None, None]
        weights = 2 ** torch.arange(self.bits, device=z.device)
        code = code ^ (flips.to(torch.int64) * weights).sum(dim=-1)
        return (code.to(z.dtype) + 0.5) * step - scale

    def airtime_s(self, dim: int, bandwidth_hz: float) -> float:
        return (dim * self.bits + 32) / (bandwidth_hz * self.bits_per_symbol)


def make_link(name: str, **options) -> FeatureLink:
    """The link ``name`` of :data:`LINKS` with ``options`` (``bits``, ``clip``, ``bits_per_symbol`` for ``digital``)."""
    return LINKS.get(name)(**options)
