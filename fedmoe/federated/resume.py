"""Checkpoint and resume of a federated run: the server's whole state after every round.

After each round the server writes ``<run>/checkpoints/resume.npz`` whole or not at all
(:func:`fedmoe.files.write_atomic`): the global arrays, the strategy's own state (round
records, virtual clock, what the devices reported, the selection RNG, the state of each
group's aggregation rule such as FedAvgM's momentum or FedAdam's moments), the server-side
evaluations so far, the random states of the server process (numpy, ``random``, torch) and
the configuration. ``fedmoe run --resume`` (or ``resume = true`` in the run config of
``flwr run``) reloads it and continues with the next round; with the same config and
seed the resumed run ends with the same global arrays, bit for bit, as a run that was
never stopped (``tests/federated/test_resume.py``).

What the devices keep between rounds (the score-function critic, parameters matching
``federated.local_keys``) is theirs, not the server's: each device writes it after every
round it trains into its own state folder (:mod:`fedmoe.federated.device_state`), so that
a resumed run finds it there.

The file is ``<run>/checkpoints/resume.npz``, and loading it never runs code from it: it
holds only arrays (read with ``allow_pickle=False``, names and sizes checked from their
headers first, :func:`fedmoe.npzfile.read_npz`) and one JSON document (member ``state``)
for everything else. The JSON describes the state with plain values and a few tagged forms
(:func:`encode_state`): arrays and tensors by the name of their member, tuples, dicts with
keys that are not strings, non-finite floats, and dataclasses registered by name in
:data:`STATE_RECORDS` (e.g. :class:`~fedmoe.federated.rounds.RoundRecord`); decoding builds
nothing else, and checks each record's fields against its type hints. A state file is
loaded only if this user owns it and neither the group nor others may write it
(:func:`fedmoe.files.open_private`): another user of the machine cannot plant one. A
``resume.pkl`` of an older fedmoe (a pickle) is never opened: resuming from it is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from fedmoe.config import FedMoEConfig
from fedmoe.errors import UsageError
from fedmoe.federated.rounds import RoundRecord
from fedmoe.files import open_private, write_atomic
from fedmoe.npzfile import Member, read_npz
from fedmoe.registry import Registry, UnknownNameError

RESUME_FILE = "resume.npz"
"""Name of the resume state inside ``<run>/checkpoints/``."""

LEGACY_RESUME_FILE = "resume.pkl"
"""Where fedmoe before format 2 kept the state, as a pickle: never opened (module docstring)."""

RESUME_FREE_SECTIONS = ("report",)
"""Config sections a resumed run may change: what the run writes for its operator, not what it computes."""

FORMAT = "fedmoe resume state"
FORMAT_VERSION = 2

STATE_MEMBER = "state"
"""The archive member holding the JSON document (UTF-8 bytes as a ``uint8`` array)."""

GLOBAL_PREFIX = "global/"
"""Archive members of the global arrays: ``global/<state-dict name>``."""

VALUE_PREFIX = "value/"
"""Archive members of the arrays inside the strategy state, the evaluations and the random states."""

STATE_RECORDS: Registry[type] = Registry("resume state record")
"""The dataclasses a resume state may hold, by class name; decoding a state builds only these
(and plain values). A strategy whose state holds a dataclass of its own registers it here."""
STATE_RECORDS.register("RoundRecord", RoundRecord)


class ResumeError(UsageError):
    """No resume state where one was asked for, or one that does not belong to this run."""


@dataclass
class ServerState:
    """Everything the server needs to continue a run after ``round`` (module docstring)."""

    round: int
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]
    strategy: dict[str, Any]
    evaluations: dict[int, dict[str, Any]] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)


def resume_path(run_dir: Path) -> Path:
    """Where the resume state of the run in ``run_dir`` lives."""
    return Path(run_dir) / "checkpoints" / RESUME_FILE


def capture_rng() -> dict[str, Any]:
    """The global random states of this process: numpy's legacy generator, ``random`` and torch."""
    return {"numpy": np.random.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned; a state that is not one (read from a file) is a
    :class:`ResumeError` naming the generator, and nothing after it is restored."""
    unknown = sorted(set(state) - {"numpy", "python", "torch"})
    if unknown:
        raise ResumeError(f"random states: unknown generator {unknown[0]!r}")
    setters = {"numpy": np.random.set_state, "python": random.setstate, "torch": torch.set_rng_state}
    for name, setter in setters.items():
        if name in state:
            try:
                setter(state[name])
            except (ValueError, TypeError, RuntimeError, IndexError, KeyError, OverflowError) as err:
                raise ResumeError(f"random states: the {name} state is not one ({type(err).__name__})") from None


def save_state(run_dir: Path, state: ServerState) -> Path:
    """Write ``state`` atomically to :func:`resume_path` (a crash leaves the previous round's).

    The global arrays become members ``global/<name>``, every other array ``value/<n>``, and
    the rest the JSON document of member ``state`` (module docstring); a value of a type
    :func:`encode_state` does not know is a ``TypeError`` (nothing is written).
    """
    values: dict[str, np.ndarray] = {}
    doc = {"format": FORMAT, "version": FORMAT_VERSION, "round": int(state.round),
           "config": encode_state(state.config, values), "global": list(state.arrays),
           "strategy": encode_state(state.strategy, values), "evaluations": encode_state(state.evaluations, values),
           "rng": encode_state(state.rng, values)}
    text = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")
    payload = {STATE_MEMBER: np.frombuffer(text, dtype=np.uint8)}
    payload.update({f"{GLOBAL_PREFIX}{k}": np.asarray(v) for k, v in state.arrays.items()})
    payload.update({f"{VALUE_PREFIX}{k}": v for k, v in values.items()})
    path = resume_path(run_dir)
    write_atomic(path, lambda f: np.savez(f, **payload))
    return path


def load_state(run_dir: Path, cfg: FedMoEConfig) -> ServerState:
    """The resume state of ``run_dir``, checked to belong to a run of ``cfg``.

    Raises :class:`ResumeError` (one line) when there is none (or only an older fedmoe's
    pickle), when the file is another user's or writable by others, when it is not a
    fedmoe resume state of this format (members, JSON, types), or when its configuration
    differs from ``cfg`` (naming the keys). Nothing in the file is executed.
    """
    path = resume_path(run_dir)
    legacy = path.with_name(LEGACY_RESUME_FILE)
    if not path.is_file():
        if legacy.exists():
            raise ResumeError(f"cannot resume the run in {run_dir}: its state is {legacy}, "
                              "a pickle written by an older fedmoe, and a pickle is never loaded "
                              "(unpickling a file can run any code in it); "
                              "start the run again with --force")
        raise ResumeError(f"nothing to resume in {run_dir}: {path.name} not found under checkpoints/ "
                          "(the run never finished a round there, or wrote to another --out)")
    try:
        with open_private(path, "resume state") as f:
            arrays = read_npz(f, str(path), check=lambda members: _check_members(members, path))
    except UsageError as err:
        raise ResumeError(str(err)) from None
    state = _decode_document(arrays, path)
    saved_config = {k: v for k, v in state.config.items() if k not in RESUME_FREE_SECTIONS}
    current = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUME_FREE_SECTIONS}
    differences = config_differences(saved_config, current)
    if differences:
        shown = ", ".join(differences[:4]) + (f" and {len(differences) - 4} more" if len(differences) > 4 else "")
        raise ResumeError(f"cannot resume the run in {run_dir} with another configuration: {shown} differ "
                          "(resume with the scenario and --set values the run started with)")
    if state.round >= cfg.federated.rounds:
        raise ResumeError(f"nothing to resume in {run_dir}: the run finished all {cfg.federated.rounds} rounds")
    return state


def check_arrays(saved: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], where: Path | str) -> None:
    """The saved global arrays have exactly the names, shapes and dtypes of ``expected`` (the
    model's initial arrays); else a :class:`ResumeError` naming the first difference."""
    if list(saved) != list(expected):
        missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
        raise ResumeError(f"{where}: its global arrays are not this model's (missing {missing[:3]}, extra {extra[:3]}"
                          f"{', or in another order' if not missing and not extra else ''})")
    for key, value in saved.items():
        want = expected[key]
        if value.shape != want.shape or value.dtype != want.dtype:
            raise ResumeError(f"{where}: global array {key} is {value.dtype}{list(value.shape)}, the model's is "
                              f"{want.dtype}{list(want.shape)}")


# --------------------------------------------------------------------------- the JSON document

_NUMERIC_KINDS = "biufc"


def _check_members(members: Mapping[str, Member], path: Path) -> None:
    """Before any value is read: the JSON member, and only global and value arrays of plain numbers."""
    doc = members.get(STATE_MEMBER)
    if doc is None or doc.dtype != np.uint8 or len(doc.shape) != 1:
        raise ResumeError(f"{path} is not a fedmoe resume state (no '{STATE_MEMBER}' document)")
    for key, m in members.items():
        if key != STATE_MEMBER and not key.startswith((GLOBAL_PREFIX, VALUE_PREFIX)):
            raise ResumeError(f"{path} is not a fedmoe resume state (unexpected member {key!r})")
        if m.dtype.kind not in _NUMERIC_KINDS or m.dtype.fields is not None:
            raise ResumeError(f"{path}: member {key!r} has dtype {m.dtype}, not plain numbers")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (non-finite floats are tagged)")


def _decode_document(arrays: dict[str, np.ndarray], path: Path) -> ServerState:
    """The :class:`ServerState` of a read archive, every part checked (module docstring)."""
    try:
        doc = json.loads(arrays[STATE_MEMBER].tobytes().decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ResumeError(f"{path}: its '{STATE_MEMBER}' document is not valid JSON ({type(err).__name__})") from None
    keys = {"format", "version", "round", "config", "global", "strategy", "evaluations", "rng"}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ResumeError(f"{path} is not a fedmoe resume state")
    if doc.get("version") != FORMAT_VERSION:
        raise ResumeError(f"{path} has format {doc.get('version')!r}; this fedmoe reads format {FORMAT_VERSION}")
    if set(doc) != keys:
        raise ResumeError(f"{path}: the state document has keys {sorted(doc)}, expected {sorted(keys)}")
    decoder = _Decoder(arrays, path)
    try:
        rnd = doc["round"]
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 1:
            raise ResumeError(f"round: expected a round number >= 1, got {rnd!r}")
        names = doc["global"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ResumeError("global: expected the list of the global arrays' names")
        global_arrays = {n: decoder.array(f"{GLOBAL_PREFIX}{n}", f"global {n}") for n in names}
        config = decoder.decode(doc["config"], "config")
        strategy = decoder.decode(doc["strategy"], "strategy")
        evaluations = decoder.decode(doc["evaluations"], "evaluations")
        rng = decoder.decode(doc["rng"], "rng")
        _expect(config, dict[str, Any], "config")
        _expect(strategy, dict[str, Any], "strategy")
        _expect(evaluations, dict[int, dict[str, Any]], "evaluations")
        _expect(rng, dict[str, Any], "rng")
        unused = sorted(set(arrays) - decoder.used - {STATE_MEMBER})
        if unused:
            raise ResumeError(f"member {unused[0]!r} is not referenced by the state document")
    except ResumeError as err:
        raise ResumeError(f"{path}: not a valid fedmoe resume state: {err}") from None
    return ServerState(rnd, config, global_arrays, strategy, evaluations, rng)


def encode_state(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``obj`` as JSON-ready plain values; every array in it moves to ``arrays`` (named ``"<n>"``).

    Plain JSON values stay as they are (``None``, booleans, integers, finite floats,
    strings, lists). Everything else becomes a one-key tagged object: ``{"$float": "nan"}``,
    ``{"$array": n}``, ``{"$scalar": n}`` (a numpy scalar, kept with its dtype),
    ``{"$tensor": n}`` (a CPU tensor), ``{"$tuple": [...]}``, ``{"$dict": [[key, value], ...]}``
    (every dict: its keys need not be strings) and ``{"$record": name, "fields": {...}}`` for a
    dataclass registered in :data:`STATE_RECORDS`. Any other type is a ``TypeError``.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else {"$float": repr(float(obj))}
    if isinstance(obj, torch.Tensor):
        return {"$tensor": _store(arrays, obj.detach().cpu().numpy())}
    if isinstance(obj, np.ndarray):
        return {"$array": _store(arrays, obj)}
    if isinstance(obj, np.generic):
        return {"$scalar": _store(arrays, np.asarray(obj))}
    if isinstance(obj, list):
        return [encode_state(v, arrays) for v in obj]
    if isinstance(obj, tuple):
        return {"$tuple": [encode_state(v, arrays) for v in obj]}
    if isinstance(obj, dict):
        return {"$dict": [[encode_state(k, arrays), encode_state(v, arrays)] for k, v in obj.items()]}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if name not in STATE_RECORDS or STATE_RECORDS.get(name) is not type(obj):
            raise TypeError(f"cannot save a {type(obj).__qualname__} in a resume state: register it in STATE_RECORDS")
        return {"$record": name, "fields": {f.name: encode_state(getattr(obj, f.name), arrays)
                                            for f in dataclasses.fields(obj)}}
    raise TypeError(f"cannot save a {type(obj).__qualname__} in a resume state (plain data, arrays and registered "
                    "dataclasses only)")


def _store(arrays: dict[str, np.ndarray], value: np.ndarray) -> str:
    if value.dtype.hasobject:
        raise TypeError("cannot save an object array in a resume state")
    key = str(len(arrays))
    arrays[key] = value
    return key


class _Decoder:
    """Turns the JSON of :func:`encode_state` back into values, refusing anything else."""

    _FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

    def __init__(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        self.arrays = arrays
        self.path = path
        self.used: set[str] = set()

    def array(self, member: str, where: str) -> np.ndarray:
        if member not in self.arrays:
            raise ResumeError(f"{where}: the array member {member!r} is missing")
        self.used.add(member)
        return self.arrays[member]

    def decode(self, node: Any, where: str) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, dict) or not node:
            raise ResumeError(f"{where}: unexpected {type(node).__name__}")
        tag = next(iter(node))
        body = node[tag]
        if tag == "$record":
            return self._record(node, where)
        if len(node) != 1:
            raise ResumeError(f"{where}: unexpected object with keys {sorted(node)[:4]}")
        if tag == "$float" and body in self._FLOATS:
            return self._FLOATS[body]
        if tag in ("$array", "$scalar", "$tensor") and isinstance(body, str):
            value = self.array(f"{VALUE_PREFIX}{body}", where)
            if tag == "$scalar":
                if value.ndim != 0:
                    raise ResumeError(f"{where}: a scalar with shape {value.shape}")
                return value[()]
            return torch.from_numpy(value.copy()) if tag == "$tensor" else value
        if tag == "$tuple" and isinstance(body, list):
            return tuple(self.decode(v, f"{where}[{i}]") for i, v in enumerate(body))
        if tag == "$dict" and isinstance(body, list):
            out: dict[Any, Any] = {}
            for i, item in enumerate(body):
                if not (isinstance(item, list) and len(item) == 2):
                    raise ResumeError(f"{where}: entry {i} is not a [key, value] pair")
                key = self.decode(item[0], f"{where} key {i}")
                if not isinstance(key, (str, int, float, bool, type(None), tuple)) or key in out:
                    raise ResumeError(f"{where}: key {i} is not a new plain key")
                out[key] = self.decode(item[1], f"{where}[{key!r}]")
            return out
        raise ResumeError(f"{where}: unknown tag {tag!r}")

    def _record(self, node: dict[str, Any], where: str) -> Any:
        name, fields = node.get("$record"), node.get("fields")
        if set(node) != {"$record", "fields"} or not isinstance(name, str) or not isinstance(fields, dict):
            raise ResumeError(f"{where}: a record needs exactly '$record' (a name) and 'fields'")
        try:
            cls = STATE_RECORDS.get(name)
        except UnknownNameError:
            raise ResumeError(f"{where}: {name!r} is not a record a resume state may hold") from None
        hints = typing.get_type_hints(cls)
        declared = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(fields) - set(declared))
        missing = sorted(n for n, f in declared.items() if n not in fields and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            raise ResumeError(f"{where}: record {name} has unknown fields {unknown} / lacks {missing}")
        values = {k: _expect(self.decode(v, f"{where}.{k}"), hints[k], f"{where}.{k}") for k, v in fields.items()}
        return cls(**values)


def _expect(value: Any, hint: Any, where: str) -> Any:
    """``value`` if it is of the type ``hint`` (an int where a float is expected becomes a float);
    else a :class:`ResumeError`. Knows the types resume states hold: plain types, ``Any``,
    ``list``, ``dict``, ``tuple``, unions, numpy arrays and records (registered dataclasses)."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _expect(value, option, where)
            except ResumeError:
                continue
        raise ResumeError(f"{where}: {type(value).__name__} is none of {hint}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool, type(None)):
        if type(value) is not hint and not (hint is type(None) and value is None):
            raise ResumeError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a nested record, already decoded as one
        if type(value) is not hint:
            raise ResumeError(f"{where}: expected a {hint.__name__} record, got {type(value).__name__}")
        return value
    if hint is np.ndarray:
        if not isinstance(value, np.ndarray):
            raise ResumeError(f"{where}: expected an array, got {type(value).__name__}")
        return value
    if origin is list and isinstance(value, list):
        return [_expect(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple and isinstance(value, tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_expect(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ResumeError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_expect(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args or [Any] * len(value))))
    if origin is dict and isinstance(value, dict):
        kt, vt = args if args else (Any, Any)
        return {_expect(k, kt, f"{where} key"): _expect(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    raise ResumeError(f"{where}: expected {hint}, got {type(value).__name__}")


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dumps (``"a.b (3 != 4)"``)."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                out.append(f"{name} (only in {'the run' if key in saved else 'this config'})")
            else:
                out += config_differences(saved[key], current[key], name)
        return out
    if saved != current:
        return [f"{prefix} ({saved!r} != {current!r})"]
    return []
