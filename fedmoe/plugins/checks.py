"""The checks of a training reply that need only numpy: array names, dtypes, shapes and values against
what the server sent, and how far each array moved (``docs/security.md``, "Malicious device").

:mod:`fedmoe.plugins.validation` applies them to Flower messages (and wraps any strategy with them);
this module imports neither Flower nor torch.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

__all__ = ["BUFFER_SUFFIXES", "check_arrays", "check_steps", "is_buffer", "short_reason"]

BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
"""Last name components of torch's normalisation buffers (``BatchNorm``, ``InstanceNorm`` with running stats)."""


def is_buffer(name: str, value: np.ndarray) -> bool:
    """True for an array the step check leaves out: an integer or boolean array (a counter), or a name
    whose last dotted component is one of :data:`BUFFER_SUFFIXES`."""
    return value.dtype.kind in "biu" or name.rsplit(".", 1)[-1] in BUFFER_SUFFIXES


def check_arrays(arrays: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> str | None:
    """The reason decoded ``arrays`` are unacceptable against the arrays the server ``sent``
    (unknown names, other dtypes or shapes, NaN/Inf), or ``None``."""
    unknown = sorted(set(arrays) - set(sent))
    if unknown:
        return f"unexpected arrays {unknown[:3]}{' …' if len(unknown) > 3 else ''}"
    for name, value in arrays.items():
        ref = sent[name]
        if value.dtype != ref.dtype:
            return f"array {name!r} has dtype {value.dtype}, expected {ref.dtype}"
        if value.shape != ref.shape:
            return f"array {name!r} has shape {value.shape}, expected {ref.shape}"
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            return f"array {name!r} holds NaN or Inf"
    return None


def check_steps(params: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray],
                max_update_ratio: float) -> str | None:
    """The reason an array of ``params`` moved too far from ``sent`` (same names), or ``None``:
    ``‖θ_k − θ‖₂ > r · max(‖θ‖₂, 1)`` (module docstring). Pass only the arrays to check (leave
    buffers out: :func:`is_buffer`)."""
    for name, value in params.items():
        ref = sent[name].astype(np.float64)
        step = float(np.linalg.norm(value.astype(np.float64) - ref))
        limit = max_update_ratio * max(float(np.linalg.norm(ref)), 1.0)
        if step > limit:
            return (f"parameter {name!r} moved by {step:.3g}, more than {max_update_ratio:g} × max(‖global‖, 1) = "
                    f"{limit:.3g}")
    return None


def short_reason(reason: str) -> str:
    """The message of an error reply without the Ray/Flower wrapping around it: the simulation's
    ``<class '...RayTaskError(ClientAppException)'>:<ray::... traceback ... Message: MSG'>`` and a
    SuperNode's ``<class 'ValueError'>:<'MSG'>`` both give ``MSG`` (its last line)."""
    text = str(reason).strip().removesuffix("'>")
    if "Message: " in text:
        text = text.rsplit("Message: ", 1)[1]
    else:
        text = re.sub(r"^<class '[^']*'>:<'?", "", text)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text.strip()
