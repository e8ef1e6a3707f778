"""Scenarios by name: TOML files that hold any subset of :class:`fedmoe.config.FedMoEConfig`.

The built-in scenarios are the ``*.toml`` files of this package's folder (``fedmoe/scenarios/``,
installed with the package as data); a user adds one by dropping a file there or, from code,
with ``SCENARIOS.register(name, path)``. The command line accepts either a scenario name or
a path to a TOML file, told apart by :func:`resolve_scenario`'s rule: a registered name is
always the built-in scenario; anything else is a path only if it looks like one (it holds a
``/``, or the platform's separator, or ends in ``.toml``). The working folder is never
searched for a name: a folder or file called ``default`` there (``fedmoe run --out default``
makes one) does not hide the built-in scenario, and ``./default`` names it when meant.

A scenario may start from another: ``extends = "default"`` (a name or a path, by the same
rule) at the top of the file loads that scenario first and merges this file's keys over
it. A relative path there is relative to the folder of the file that holds the
``extends``, not to the working folder, so a scenario and its base move together.
"""

from __future__ import annotations

import os
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


def looks_like_path(text: str | Path) -> bool:
    """Whether a scenario that is not a registered name is taken as a path: it holds a path
    separator or ends in ``.toml`` (module docstring). A :class:`~pathlib.Path` always is one."""
    if isinstance(text, Path):
        return True
    separators = {"/", os.sep, os.altsep} - {None}
    return any(sep in text for sep in separators) or text.endswith(".toml")


def resolve_scenario(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """The TOML file of a scenario given by registered name or by path (module docstring's rule).

    Parameters
    ----------
    name_or_path : str or Path
        A built-in scenario's name (looked up first), or a path (a ``Path``, or text with a
        separator or ending in ``.toml``).
    relative_to : Path, optional
        The folder a relative path is relative to (the folder of a file whose ``extends``
        names it); default the working folder.
    """
    text = str(name_or_path)
    if not text.strip():
        raise ConfigError("empty scenario name (give a built-in scenario name or a path to a .toml file)")
    if not isinstance(name_or_path, Path) and text in SCENARIOS:
        return SCENARIOS.get(text)
    if not looks_like_path(name_or_path):
        raise ConfigError(f"unknown scenario {text!r} (known: {', '.join(SCENARIOS.names()) or 'none'}; "
                          f"or give a path to a .toml file: one with a '/' or ending in .toml, e.g. ./{text})")
    candidate = Path(name_or_path)
    if relative_to is not None and not candidate.is_absolute():
        candidate = Path(relative_to) / candidate
    if candidate.is_dir():
        raise ConfigError(f"{candidate}: is a folder, not a config file")
    if not candidate.is_file():
        raise ConfigError(f"{candidate}: no such config file")
    return candidate


def scenario_data(name_or_path: str | Path, _seen: tuple[Path, ...] = (), relative_to: Path | None = None
                  ) -> dict[str, Any]:
    """The raw content of a scenario file, with the scenario it ``extends`` merged underneath
    (a relative path in ``extends`` is relative to the file that holds it)."""
    path = resolve_scenario(name_or_path, relative_to)
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
        resolve_scenario(base, path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: extends = {base!r}: {err}") from None
    return deep_merge(scenario_data(base, (*_seen, path.resolve()), path.parent), data)


def load_scenario(name_or_path: str | Path | None = "default", overrides: dict[str, Any] | None = None) -> FedMoEConfig:
    """Load a scenario (name or path; ``None`` = built-in defaults) with optional nested overrides."""
    data: dict[str, Any] = {} if name_or_path is None else scenario_data(name_or_path)
    source = "config" if name_or_path is None else str(resolve_scenario(name_or_path))
    return parse_config(deep_merge(data, overrides or {}), FedMoEConfig, source)
