"""Scenarios by name: TOML files that hold any subset of :class:`fedmoe.config.FedMoEConfig`.

The built-in scenarios are the ``*.toml`` files of this package's folder (``fedmoe/scenarios/``,
installed with the package as data); a user adds one by dropping a file there or, from code,
with ``SCENARIOS.register(name, path)``. The command line accepts either a scenario name or
a path to a TOML file.

A scenario may start from another: ``extends = "default"`` (a name or a path) at the top
of the file loads that scenario first and merges this file's keys over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedmoe.config import ConfigError, FedMoEConfig, deep_merge, parse_config, read_toml
from fedmoe.registry import Registry

SCENARIO_DIR = Path(__file__).resolve().parent
"""Folder of the built-in scenario files (``fedmoe/scenarios``: this package's folder)."""

SCENARIOS: Registry[Path] = Registry("scenario")
"""Scenario name -> TOML path."""

for _path in sorted(SCENARIO_DIR.glob("*.toml")):
    SCENARIOS.register(_path.stem, _path)


def resolve_scenario(name_or_path: str | Path) -> Path:
    """The TOML file of a scenario given by registered name or by path."""
    if not str(name_or_path).strip():
        raise ConfigError("empty scenario name (give a built-in scenario name or a path to a .toml file)")
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if candidate.is_dir():
            raise ConfigError(f"{candidate}: is a folder, not a config file")
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: no such config file")
        return candidate
    if str(name_or_path) in SCENARIOS.names():
        return SCENARIOS.get(str(name_or_path))
    raise ConfigError(f"unknown scenario {str(name_or_path)!r} (known: {', '.join(SCENARIOS.names()) or 'none'}; "
                      "or give a path to a .toml file)")


def scenario_data(name_or_path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw content of a scenario file, with the scenario it ``extends`` merged underneath."""
    path = resolve_scenario(name_or_path)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: 'extends' forms a cycle ({chain})")
    data = read_toml(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be a scenario name or path, got {base!r}")
    try:
        resolve_scenario(base)
    except ConfigError as err:
        raise ConfigError(f"{path}: extends = {base!r}: {err}") from None
    return deep_merge(scenario_data(base, (*_seen, path.resolve())), data)


def load_scenario(name_or_path: str | Path | None = "default", overrides: dict[str, Any] | None = None) -> FedMoEConfig:
    """Load a scenario (name or path; ``None`` = built-in defaults) with optional nested overrides."""
    data: dict[str, Any] = {} if name_or_path is None else scenario_data(name_or_path)
    source = "config" if name_or_path is None else str(resolve_scenario(name_or_path))
    return parse_config(deep_merge(data, overrides or {}), FedMoEConfig, source)
