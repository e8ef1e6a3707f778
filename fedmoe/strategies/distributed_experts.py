"""Distributed experts over noisy downlinks with a channel-aware gate, on Flower messages ([P004]).

[P004] (and the WDMoE of the survey [P003]) keeps a backbone and the gate at the server and hosts
expert ``k`` on device ``k``. To classify a sample the server computes ``z = F(x)``, the
gate picks one expert ``k*`` (naive: from ``z``; channel-aware: from ``z`` and every
expert's link distortion ``d_k``), ``z`` crosses the downlink to device ``k*`` (which
receives ``ẑ``, :mod:`fedmoe.split.links`), and the device returns ``E_{k*}(ẑ)``.

This ServerApp loop

1. trains the mixture at the server in [P004]'s two stages (:func:`fedmoe.split.task.train_task`);
2. deploys expert ``k`` to the device with partition id ``k`` (``query.expert``, phase ``deploy``,
   :mod:`fedmoe.clients.distributed`);
3. for every SNR of ``distributed.eval_snr_db`` and both gates, draws each test sample's
   per-expert SNR (mean SNR times a Rayleigh gain), routes, corrupts the features on the
   chosen link, and sends each device the rows routed to it in one exchange; the devices'
   logits give the accuracy. The server also computes the chosen experts on the same
   ``ẑ`` itself and reports the largest difference (it must be float round-off). A device
   whose reply is an error, does not arrive within ``split.message_timeout_s``, or is not
   one finite ``float32`` logit row per row sent (:func:`fedmoe.strategies.validation.read_arrays`:
   names and metadata before any value is decoded) is logged and listed in the result's
   ``failures``; its rows count as misclassified and the evaluation goes on;
4. puts every exchange on the clock: downlink airtime of the features
   (``link.airtime_s`` on ``distributed.bandwidth_hz``), the expert's FLOPs on the device,
   and the logits back at the device's uplink rate (the ``K`` devices share the band).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedmoe.config import FedMoEConfig
from fedmoe.federated.parameters import payload_bits
from fedmoe.federated.world import config_json, world_for
from fedmoe.flower import to_record
from fedmoe.split.distributed import DistributedMoE, fixed_snr
from fedmoe.split.task import TaskData, task_data, task_link, train_task
from fedmoe.strategies.validation import read_arrays, short_reason
from fedmoe.wireless.devices import equal_share_rate

log = logging.getLogger(__name__)

EXPERT = f"{MessageType.QUERY}.expert"
GATES = ("naive", "aware")


@dataclass
class DistributedRun:
    """What :func:`serve_distributed` produced."""

    metrics: dict[str, Any]
    wall_s: float
    models: dict[str, DistributedMoE] = field(repr=False, default_factory=dict)


def _expert_flops(model: DistributedMoE) -> float:
    """FLOPs per sample of one expert: two per weight of its linear layers."""
    return float(sum(2 * m.weight.numel() for m in model.experts[0].modules() if isinstance(m, torch.nn.Linear)))


class DistributedExperts:
    """The loop of the module docstring, on ``grid``."""

    def __init__(self, cfg: FedMoEConfig) -> None:
        self.world = world_for(cfg)
        self.cfg = self.world.cfg
        self.scenario_json = config_json(self.cfg)
        self.link = task_link(self.cfg)
        self.node_of: dict[int, int] = {}

    def _send(self, grid: Grid, per_device: dict[int, tuple[dict, dict]], failures: list[str],
              expect: dict[int, dict[str, np.ndarray]] | None = None) -> dict[int, dict[str, np.ndarray]]:
        """Send each device its message; ``{device: arrays}`` of the replies accepted. With ``expect``
        a reply must hold exactly those arrays (names, dtypes, shapes; finite values); the others
        (errors, silence, malformed replies) are logged and added to ``failures``."""
        msgs = []
        for dev, (config, arrays) in per_device.items():
            content = RecordDict({"config": ConfigRecord({"scenario": self.scenario_json, **config}),
                                  "arrays": to_record(arrays)})
            msgs.append(Message(content=content, message_type=EXPERT, dst_node_id=self.node_of[dev]))
        replies = grid.send_and_receive(msgs, timeout=self.cfg.split.message_timeout_s)
        out = {}
        dev_of = {n: d for d, n in self.node_of.items()}
        refused: set[int] = set()
        for reply in replies:
            dev = dev_of.get(reply.metadata.src_node_id)
            if dev is None or dev not in per_device or dev in out or dev in refused:
                continue
            if reply.has_error():
                reason = short_reason(reply.error.reason)
            elif expect is None:
                out[dev] = {}
                continue
            else:
                record = reply.content.array_records.get("arrays")
                arrays, reason = (None, "no arrays") if record is None else read_arrays(record, expect[dev])
                if arrays is not None:
                    out[dev] = arrays
                    continue
            refused.add(dev)
            failures.append(f"expert device {dev}: {reason}")
            log.warning("expert device %d failed or was refused: %s", dev, reason)
        for dev in sorted(set(per_device) - set(out) - refused):
            failures.append(f"expert device {dev}: no reply within {self.cfg.split.message_timeout_s:g} s")
            log.warning("expert device %d did not reply within %g s", dev, self.cfg.split.message_timeout_s)
        return out

    def deploy(self, grid: Grid, model: DistributedMoE) -> list[str]:
        """Send expert ``k``'s parameters to device ``k``; returns the failures (a device that failed
        has no expert, and its rows will be refused at inference)."""
        failures: list[str] = []
        self._send(grid, {k: ({"phase": "deploy"},
                              {n: p.detach().numpy() for n, p in model.experts[k].state_dict().items()})
                          for k in range(model.num_experts)}, failures)
        return failures

    @torch.no_grad()
    def classify(self, grid: Grid, model: DistributedMoE, data: TaskData, snr_db: float, aware: bool,
                 seed: int) -> dict[str, Any]:
        """Accuracy, routing and cost of the test set through the devices at mean ``snr_db``."""
        model.eval()
        x, y = data.x_test, data.y_test
        n, k = len(x), model.num_experts
        g = torch.Generator().manual_seed(seed)
        z = model.backbone(x)
        snr = fixed_snr(n, k, snr_db, self.cfg.distributed.fading, g)
        distortion = self.link.distortion(snr) if aware else None
        choice = model.gate_logits(z, distortion, aware).argmax(dim=1)
        received = self.link.corrupt(z, snr.gather(1, choice[:, None]).squeeze(1), g)
        rows = {i: torch.nonzero(choice == i).squeeze(1) for i in range(k)}
        per = {i: ({"phase": "infer", "num-classes": data.num_classes}, {"z": received[r].numpy()})
               for i, r in rows.items() if r.numel()}
        failures: list[str] = []
        expect = {i: {"out": np.zeros((len(rows[i]), data.num_classes), np.float32)} for i in per}
        replies = self._send(grid, per, failures, expect)
        logits = torch.zeros(n, data.num_classes)
        answered = torch.zeros(n, dtype=torch.bool)
        for i, arrays in replies.items():
            logits[rows[i]] = torch.as_tensor(arrays["out"])
            answered[rows[i]] = True
        local = model.route(received, choice)
        latency, energy = self._cost(model, per, replies, data.num_classes)
        diff = (logits - local).abs()[answered]
        return {"accuracy": float(((logits.argmax(1) == y) & answered).float().mean()),
                "route_share": np.bincount(choice.numpy(), minlength=k).astype(float).tolist(),
                "max_abs_diff_vs_server": float(diff.max()) if diff.numel() else 0.0,
                "unanswered_rows": int((~answered).sum()), "failures": failures,
                "latency_s": latency, "energy_j": energy, "energy_per_sample_j": energy / n}

    def _cost(self, model: DistributedMoE, sent: dict, replies: dict, num_classes: int) -> tuple[float, float]:
        """Latency (the slowest device) and energy (all devices) of one exchange (module docstring, step 4)."""
        k = model.num_experts
        prof = self.world.profiles.subset(np.arange(k))
        rate = equal_share_rate(prof, self.cfg.wireless)
        flops_per = _expert_flops(model)
        dim = self.cfg.distributed.feature_dim
        times, energy = [], 0.0
        for i, (_, arrays) in sent.items():
            m = len(arrays["z"])
            t_down = m * self.link.airtime_s(dim, self.cfg.distributed.bandwidth_hz)
            flops = m * flops_per
            t_up = payload_bits(replies.get(i, {})) / max(float(rate[i]), 1e-12)  # nothing back from a failed one
            times.append(t_down + flops / float(prof.compute_flops[i]) + t_up)
            energy += float(prof.energy_per_flop_j[i]) * flops + float(prof.tx_power_w[i]) * t_up
        return max(times, default=0.0), energy

    def run(self, grid: Grid) -> tuple[dict[str, Any], dict[str, DistributedMoE]]:
        from fedmoe.split.distributed import accuracy_at
        from fedmoe.strategies.discovery import discover_devices

        d = self.cfg.distributed
        t0 = time.perf_counter()
        data = task_data(self.cfg)
        trained = train_task(self.cfg, data)
        log.info("distributed experts trained in %.1f s", time.perf_counter() - t0)
        devices = discover_devices(grid, self.world.num_devices, self.scenario_json)
        self.node_of = {info.device_id: node for node, info in devices.items()}
        deploy_failures = self.deploy(grid, trained.naive)  # both gates share the experts (stage 2 trains gates only)
        models = {"naive": trained.naive, "aware": trained.aware}
        results: dict[str, dict[str, Any]] = {g: {} for g in GATES}
        for snr_db in d.eval_snr_db:
            for gate in GATES:
                results[gate][f"{snr_db:g}"] = self.classify(grid, models[gate], data, snr_db, gate == "aware",
                                                             d.seed * 1009 + int(snr_db * 10))
        ideal = accuracy_at(trained.naive, data.x_test, data.y_test, None, None, aware=False)
        gain = {s: 100 * (results["aware"][s]["accuracy"] - results["naive"][s]["accuracy"]) for s in results["naive"]}
        doc = {"mode": "distributed", "dataset": d.dataset, "link": d.link, "num_experts": d.num_experts,
               "test_samples": len(data.y_test), "ideal_link_accuracy": ideal, "results": results,
               "aware_minus_naive_points": gain, "stage1_losses": trained.stage1_losses,
               "stage2_losses": trained.stage2_losses, "deploy_failures": deploy_failures,
               "wall_s": time.perf_counter() - t0}
        return doc, models


def plot_accuracy_vs_snr(doc: dict[str, Any], path: Path) -> None:
    """Accuracy of the naive and the channel-aware gate against the mean SNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for gate, label in (("naive", "naive gate"), ("aware", "channel-aware gate")):
        snrs = sorted(doc["results"][gate], key=float)
        ax.plot([float(s) for s in snrs], [doc["results"][gate][s]["accuracy"] for s in snrs], marker="o", label=label)
    ax.axhline(doc["ideal_link_accuracy"], color="grey", ls="--", label="ideal links")
    ax.set(xlabel="mean SNR, dB", ylabel="test accuracy",
           title=f"{doc['num_experts']} distributed experts, {doc['link']} link, {doc['dataset']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def serve_distributed(grid: Grid, cfg: FedMoEConfig, run_dir: Path | None, on_round=None,
                      scenario_file: Path | None = None) -> DistributedRun:
    """Run the loop on ``grid``; write ``metrics.json``, ``config.json`` and ``accuracy_vs_snr.png`` to ``run_dir``."""
    t0 = time.perf_counter()
    loop = DistributedExperts(cfg)
    doc, models = loop.run(grid)
    if run_dir is not None:
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(loop.cfg.model_dump(mode="json"), indent=2))
        (out / "metrics.json").write_text(json.dumps(doc, indent=2))
        plot_accuracy_vs_snr(doc, out / "accuracy_vs_snr.png")
    return DistributedRun(doc, time.perf_counter() - t0, models)
