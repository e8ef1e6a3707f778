"""``key.path=value`` overrides of a scenario's config values, wherever a user types them: the
``--set`` options of the command line (``fedmoe run``, ``fedmoe deploy local``, ...) and the
``;``-separated ``overrides`` of a ``flwr run`` run config (:mod:`fedmoe.strategies.server_app`).

>>> parse_overrides(["data.seed=3", "federated.strategy=plain_fedavg"])
{'data': {'seed': 3}, 'federated': {'strategy': 'plain_fedavg'}}
"""

from __future__ import annotations

import tomllib
from typing import Any, Iterable

from fedmoe.config import ConfigError, dotted_to_nested


def parse_assignment(text: str, option: str = "--set") -> tuple[str, Any]:
    """``"data.seed=3"`` -> ``("data.seed", 3)``; the value is read as TOML, else kept as a string.
    ``option`` names where the text came from in the error (``--set``, the run config's ``overrides``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{option} {text!r}: expected key.path=value")
    if any(not part.strip() for part in key.split(".")):
        raise ConfigError(f"{option} {text!r}: empty part in the key {key.strip()!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def parse_overrides(assignments: Iterable[str], option: str = "--set") -> dict[str, Any]:
    """The nested overrides (for :func:`fedmoe.scenarios.load_scenario`) of ``key.path=value``
    texts: :func:`parse_assignment` of each (a later key wins), then
    :func:`fedmoe.config.dotted_to_nested`."""
    return dotted_to_nested(dict(parse_assignment(a, option) for a in assignments))
