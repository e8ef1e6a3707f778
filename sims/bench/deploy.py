"""Per-round wall time of the same scenario deployed on real SuperNodes and simulated, in one run.

    python -m sims.bench.deploy [--rounds 3] [--out sims/bench/results/deploy.json]

The scenario is ``make deploy-demo``'s: the default scenario with 3 devices, all 3 per round,
``federated.stage1_rounds=1``.

* **deployed**: :class:`fedmoe.deploy.local.LocalCluster` — a SuperLink with TLS and SuperNode
  authentication and 3 authenticated SuperNodes on 127.0.0.1 (each with its ``state-dir``), then
  ``flwr run`` of this project. Every message starts a fresh ``flwr-clientapp`` process (Flower 1.41);
  each logs its start-up, its handler time and what it found in its state folder
  (:mod:`fedmoe.federated.prepared`), summarised under ``messages``.
* **simulated**: ``fedmoe run``'s machinery (:func:`fedmoe.simulation.run_federated`, Ray backend).

A round's wall time is, on both sides, the time from the ServerApp's ``[ROUND k/N]`` log line to
the next one (the last round: to ``Strategy execution finished``); deployed, the lines are read from
the streamed run log, so each value is good to about a second. Round 1 includes the device query
and, deployed, the first generation of every device's data; the target compares the mean of the
rounds after the first (the steady state a longer run lives in):
``deployed_over_simulated`` ≤ 1.5 (issue 20).

The deployment uses the machine's own 127.0.0.1 for its few minutes, as ``make test-deploy`` does
(``fedmoe deploy local`` runs in a private network namespace instead).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sims.bench.common import machine, target, write_report

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "deploy.json"
NODES = 3
MESSAGE_LINE = re.compile(r"fedmoe device (\d+) (train|evaluate) round (\d+): process start-up ([\d.]+) s, "
                          r"handler ([\d.]+) s \(prepared: (.*)\)")


def scenario_sets(rounds: int) -> list[str]:
    """``make deploy-demo``'s overrides with ``rounds`` rounds."""
    return [f"partition.num_devices={NODES}", f"federated.clients_per_round={NODES}", f"federated.rounds={rounds}",
            "federated.stage1_rounds=1"]


def _durations(starts: list[float], finished: float | None) -> list[float]:
    t = starts + ([finished] if finished is not None and starts else [])
    return [round(b - a, 2) for a, b in zip(t, t[1:])]


def deployed(rounds: int, folder: Path) -> dict:
    from fedmoe.deploy.local import LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(folder, NODES, force=True, stream=False) as cluster:
        cluster.start()
        startup = time.perf_counter() - t0
        result = cluster.run("default", scenario_sets(rounds), timeout=3600)
        logs = {k: cluster.supernodes[k].log_text() for k in range(NODES)}
        report = cluster.stop()
    if result.status != "finished:completed":
        raise RuntimeError(f"deployed run ended {result.status}; see {result.log}")
    messages = [{"device": int(m[1]), "kind": m[2], "round": int(m[3]), "startup_s": float(m[4]),
                 "handler_s": float(m[5]), "prepared": m[6]}
                for text in logs.values() for m in MESSAGE_LINE.finditer(text)]
    return {"startup_s": round(startup, 1), "run_wall_s": round(result.wall_s, 1),
            "round_s": [round(d, 2) for d in result.round_durations_s], "messages": messages,
            "stopped_pids": len(report["terminated"])}


class _RoundClock(logging.Handler):
    """Times of the ServerApp's ``[ROUND k/N]`` and ``Strategy execution finished`` log records."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []
        self.finished: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if re.search(r"\[ROUND \d+/\d+\]", text):
            self.starts.append(time.perf_counter())
        elif "Strategy execution finished" in text and self.finished is None:
            self.finished = time.perf_counter()


def simulated(rounds: int, folder: Path) -> dict:
    from fedmoe.config import dotted_to_nested
    from fedmoe.overrides import parse_assignment
    from fedmoe.scenarios import load_scenario
    from fedmoe.simulation import run_federated

    cfg = load_scenario("default", dotted_to_nested(dict(parse_assignment(a) for a in scenario_sets(rounds))))
    clock = _RoundClock()
    logger = logging.getLogger("flwr")
    logger.addHandler(clock)
    t0 = time.perf_counter()
    try:
        run_federated(cfg, folder, progress=False, force=True, verbose=True)  # verbose: keeps the INFO round lines
    finally:
        logger.removeHandler(clock)
    return {"run_wall_s": round(time.perf_counter() - t0, 1), "round_s": _durations(clock.starts, clock.finished)}


def steady(round_s: list[float]) -> float:
    """Mean wall time of the rounds after the first."""
    return float(np.mean(round_s[1:])) if len(round_s) > 1 else float("nan")


def message_summary(messages: list[dict]) -> dict:
    """Mean start-up and handler time of the training messages, by whether their data came from the state folder."""
    out = {}
    for label, pick in (("first", lambda m: "partition" in m["prepared"] and "miss" in m["prepared"]),
                        ("from_state_folder", lambda m: "hit" in m["prepared"] and "miss" not in m["prepared"])):
        chosen = [m for m in messages if m["kind"] == "train" and pick(m)]
        if chosen:
            out[label] = {"count": len(chosen),
                          "startup_s": round(float(np.mean([m["startup_s"] for m in chosen])), 2),
                          "handler_s": round(float(np.mean([m["handler_s"] for m in chosen])), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="fedmoe-bench-deploy-"))
    try:
        dep = deployed(args.rounds, work / "deploy")
        sim = simulated(args.rounds, work / "sim")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = steady(dep["round_s"]) / steady(sim["round_s"])
    doc = {"benchmark": "deploy", "scenario": {"name": "default", "sets": scenario_sets(args.rounds)},
           "machine": machine(load_average_before=[round(x, 1) for x in load_before],
                              load_average_after=[round(x, 1) for x in os.getloadavg()]),
           "deployed": dep, "simulated": sim, "messages": message_summary(dep["messages"]),
           "targets": {"deployed_over_simulated": target(
               round(ratio, 2), "<= 1.5", ratio <= 1.5, definition="mean of rounds 2.. deployed / simulated")},
           "wall_s": round(time.perf_counter() - t0, 1)}

    def table(d: dict) -> None:
        print("round  deployed_s  simulated_s")
        for i, (a, b) in enumerate(zip(d["deployed"]["round_s"], d["simulated"]["round_s"]), 1):
            print(f"{i:5d}  {a:10.1f}  {b:11.1f}")
        print(json.dumps(d["messages"]))

    write_report(doc, args.out, lambda d, path: [], table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
