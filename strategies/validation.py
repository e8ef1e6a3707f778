"""Checks of a device's training reply before it may reach any aggregation rule.

A reply is rejected, with a one-line reason, if

* ``num-examples`` is missing, not a finite integer, below 1, or above the number of
  training samples the scenario gives that device (the server computes it itself, so a
  device cannot inflate its weight);
* ``expert-usage`` (if present) does not have one finite entry in ``[0, 1]`` per expert;
* an array has a name the server did not send (``wrong keys``);
* an array's dtype or shape differs from the one the server sent under that name;
* an array holds NaN or ±Inf;
* a trainable parameter moved absurdly far: ``‖θ_k − θ‖₂ > r · max(‖θ‖₂, 1)`` for the
  parameter ``θ`` the server sent, with ``r = federated.max_update_ratio`` (ten times the
  global parameter's own norm by default; a legitimate round of local SGD moves it by a
  fraction of that). Buffers are left out of this check: the standardiser's statistics
  jump from their initial values to the data's in the first round.

Only complete groups matter to the aggregation, so a reply may leave arrays out; it may not
add, reshape or poison any.

:func:`short_reason` shortens an error reply to its message.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np

from fedmoe.federated.protocol import NUM_EXAMPLES_KEY, USAGE_KEY


def check_metrics(metrics: Mapping[str, Any], max_examples: int, num_experts: int) -> str | None:
    """The reason ``metrics`` are unacceptable, or ``None`` (module docstring)."""
    if NUM_EXAMPLES_KEY not in metrics:
        return f"no {NUM_EXAMPLES_KEY!r}"
    n = metrics[NUM_EXAMPLES_KEY]
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(float(n)) or float(n) != int(n):
        return f"{NUM_EXAMPLES_KEY}={n!r} is not a finite integer"
    if not 1 <= int(n) <= max_examples:
        return f"{NUM_EXAMPLES_KEY}={int(n)} is outside [1, {max_examples}] (the device's training samples)"
    if USAGE_KEY in metrics:
        usage = np.asarray(list(metrics[USAGE_KEY]), dtype=np.float64)
        if usage.shape != (num_experts,):
            return f"{USAGE_KEY} has {usage.size} entries, the model has {num_experts} experts"
        if not np.isfinite(usage).all() or (usage < 0).any() or (usage > 1).any():
            return f"{USAGE_KEY} has entries outside [0, 1]"
    return None


def check_arrays(arrays: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray]) -> str | None:
    """The reason ``arrays`` (as they travel) are unacceptable against the arrays the server ``sent``, or ``None``."""
    unknown = sorted(set(arrays) - set(sent))
    if unknown:
        return f"unexpected arrays {unknown[:3]}{' …' if len(unknown) > 3 else ''}"
    for name, value in arrays.items():
        ref = sent[name]
        if value.dtype != ref.dtype:
            return f"array {name!r} has dtype {value.dtype}, expected {ref.dtype}"
        if value.shape != ref.shape:
            return f"array {name!r} has shape {value.shape}, expected {ref.shape}"
        if not np.isfinite(value).all():
            return f"array {name!r} holds NaN or Inf"
    return None


def check_steps(params: Mapping[str, np.ndarray], sent: Mapping[str, np.ndarray], max_update_ratio: float) -> str | None:
    """The reason a parameter of ``params`` moved too far from ``sent`` (same names), or ``None``."""
    for name, value in params.items():
        ref = sent[name].astype(np.float64)
        step = float(np.linalg.norm(value.astype(np.float64) - ref))
        limit = max_update_ratio * max(float(np.linalg.norm(ref)), 1.0)
        if step > limit:
            return f"parameter {name!r} moved by {step:.3g}, more than {max_update_ratio:g} × max(‖global‖, 1) = {limit:.3g}"
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
