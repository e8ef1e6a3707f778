"""The ServerApp: any of Flower's strategies, chosen by the run config's ``strategy``."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, Krum

from digits_app.task import Net

STRATEGIES = {
    "fedavg": lambda: FedAvg(),
    "fedprox": lambda: FedProx(proximal_mu=0.1),
    "fedadam": lambda: FedAdam(eta=0.05),
    "fedmedian": lambda: FedMedian(),
    "krum": lambda: Krum(num_malicious_nodes=0),
}
DEFAULTS = {"strategy": "fedavg", "num-server-rounds": 3}
"""Used where the run config says nothing (``flwr.simulation.run_simulation`` passes none)."""
RESULTS: list = []
"""What each run in this process returned (for scripts and tests that run the app in-process)."""

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = {**DEFAULTS, **context.run_config}
    strategy = STRATEGIES[str(config["strategy"])]()
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(Net().state_dict()),
                            num_rounds=int(config["num-server-rounds"]))
    RESULTS.append((strategy, result))
