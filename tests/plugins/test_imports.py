"""What a user imports from fedmoe: light where it can be, and never shadowed by a user's own packages
called ``strategies``, ``clients`` or ``sims``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _loaded(code: str, cwd: Path) -> dict:
    probe = code + "\nimport json, sys\nprint(json.dumps({m: m in sys.modules for m in ('torch', 'flwr')}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_clock_and_the_numpy_checks_load_neither_torch_nor_flower(tmp_path):
    assert _loaded("import fedmoe.plugins.clock, fedmoe.plugins.checks\nfrom fedmoe.plugins import VirtualClock",
                   tmp_path) == {"torch": False, "flwr": False}


def test_the_wrappers_load_flower_but_not_torch(tmp_path):
    assert _loaded("from fedmoe.plugins import ValidatedStrategy, WirelessSelection, device_profiles, update_bits",
                   tmp_path) == {"torch": False, "flwr": True}


def test_a_users_own_strategies_clients_and_sims_packages_do_not_clash(tmp_path):
    """A user's project with its own ``strategies``, ``clients`` and ``sims`` packages, run from its folder
    (first on ``sys.path``): fedmoe's library, its Flower apps and the simulation runner still import."""
    for name in ("strategies", "clients", "sims"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("MINE = True\n")
    code = ("import strategies, clients, sims\nassert strategies.MINE and clients.MINE and sims.MINE\n"
            "import fedmoe.simulation, fedmoe.cli, fedmoe.deploy.local\n"
            "from fedmoe.strategies import AGGREGATORS, ExpertWise\nfrom fedmoe.clients.app import app\n"
            "from fedmoe.plugins import WirelessSelection\n"
            "assert strategies.__file__.startswith(%r)" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_nothing_in_the_library_imports_the_top_level_entry_points():
    offenders = []
    for path in sorted((ROOT / "fedmoe").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1 and \
                    words[1].split(".")[0] in ("strategies", "clients", "sims"):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, offenders
