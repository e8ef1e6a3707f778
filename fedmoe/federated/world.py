"""What the server and every client derive from the scenario alone, without holding any data.

A :class:`ScenarioWorld` is a pure function of the configuration: the sample source of
the synthetic generator, input shapes and uplink bits per modality, the initial mixture
(seeded), the experts' FLOPs, the devices of the cell and the cost scale. The server
and each client build the same world from the same config, so a client needs nothing
but the config it receives in a message and its partition id.

Device ``k``'s data are built lazily (:func:`fedmoe.data.partition.make_device_partition`;
with ``data.input``, its part of the dataset file, :mod:`fedmoe.data.file_split`) and kept
in a small per-process LRU cache (``federated.partition_cache`` entries). A ClientApp on a
SuperNode with a state folder sets :attr:`ScenarioWorld.prepared`: generated data and the
experts' counted costs are then read from that folder when an earlier message of the same
scenario left them there, and written there otherwise (:mod:`fedmoe.federated.prepared`). The cache holds
*derived* data only — the same for every virtual client that asks — so sharing it
between the virtual clients of one Ray worker is safe; per-client state lives in
Flower's ``context.state``.
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from functools import cached_property

import numpy as np
import torch

from fedmoe.config import MODALITIES, FedMoEConfig, parse_config
from fedmoe.data.file_split import FileSplit, check_labels, load_dataset_file, split_file_dataset
from fedmoe.data.partition import (
    DevicePartition,
    SampleSource,
    apply_degradation,
    apply_modality_mask,
    device_degradation,
    device_modalities,
    device_rng,
    local_size,
    make_device_partition,
)
from fedmoe.data.samples import ISACSamples
from fedmoe.data.trace_formats import load_trace
from fedmoe.federated.parameters import PackedLayout
from fedmoe.federated.prepared import PreparedCache, check_expert_members, experts_key, partition_extra, partition_key
from fedmoe.federated.update_codec import UpdateCodec
from fedmoe.models.builder import build_moe
from fedmoe.models.cost import ExpertCost, expert_costs
from fedmoe.models.device_costs import ExpertFootprint, cost_reference, expert_cost_matrices
from fedmoe.models.moe import MoE
from fedmoe.training import set_routing_cost_weight
from fedmoe.wireless.devices import DeviceProfiles, equal_share_rate, sample_device_profiles
from fedmoe.wireless.trace import ChannelTrace

_SERVER_TEST_STREAM = 0x7E57
_SERVER_VALIDATION_STREAM = 0x7A11D
_WORLDS: "OrderedDict[str, ScenarioWorld]" = OrderedDict()
_MAX_WORLDS = 4


def config_json(cfg: FedMoEConfig) -> str:
    """The canonical JSON of a config (what travels in a message's ``ConfigRecord``)."""
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def check_run_memory(cfg: FedMoEConfig) -> None:
    """Refuse, before anything starts, a run whose data alone cannot fit in this machine's memory.

    Each set of samples a run generates at once — a device's training data
    (``partition.samples_per_device``), the server's test set (``federated.test_samples``)
    and, with ``federated.centralised_reference`` in federated mode, the union of every
    device's data the reference trains on — is checked in that order by
    :func:`fedmoe.data.synthetic.check_generation_fits`, which refuses the first that exceeds
    the memory available. With ``data.input`` the dataset file is read instead (refused if it
    declares more than the memory available) and split (:mod:`fedmoe.data.file_split`), so a file
    the run cannot use fails here. That is a lower bound of what the run needs (the simulation holds
    several devices' data at once, and models and batches besides), so a run it lets through
    may still be too big; one it refuses cannot fit.
    """
    from fedmoe.data.synthetic import check_generation_fits

    pcfg, fed = cfg.partition, cfg.federated
    sets = [(f"partition.samples_per_device={pcfg.samples_per_device}", pcfg.samples_per_device),
            (f"federated.test_samples={fed.test_samples}", fed.test_samples)]
    if fed.centralised_reference and cfg.mode == "federated":
        sets.append((f"the centralised reference (partition.num_devices={pcfg.num_devices} devices' data; "
                     "federated.centralised_reference=false skips it)", pcfg.num_devices * pcfg.samples_per_device))
    if cfg.data.input is not None:  # no generation: the file's own size is checked when it is read
        world_for(cfg)  # reads the file (within the memory available) and splits it: a bad file fails here
        return
    for what, n in sets:
        check_generation_fits(cfg.data, cfg.wireless.channel, n, what)


def world_for(cfg_or_json: FedMoEConfig | str) -> "ScenarioWorld":
    """The (cached) world of a config, given as a :class:`FedMoEConfig` or its JSON."""
    key = cfg_or_json if isinstance(cfg_or_json, str) else config_json(cfg_or_json)
    world = _WORLDS.get(key)
    if world is None:
        cfg = cfg_or_json if isinstance(cfg_or_json, FedMoEConfig) else \
            parse_config(json.loads(cfg_or_json), source="scenario from the server")
        world = ScenarioWorld(cfg)
        _WORLDS[key] = world
        while len(_WORLDS) > _MAX_WORLDS:
            _WORLDS.popitem(last=False)
    else:
        _WORLDS.move_to_end(key)
    return world


class ScenarioWorld:
    """The scenario's derived, data-free objects (module docstring).

    Parameters
    ----------
    cfg
        The full configuration; ``cfg.partition.num_devices`` devices exist.
    """

    def __init__(self, cfg: FedMoEConfig) -> None:
        from fedmoe.data.synthetic import synthetic_source

        self.cfg = cfg
        self.num_devices = cfg.partition.num_devices
        self.num_beams = cfg.wireless.channel.codebook_size
        self.file: ISACSamples | None = None
        self.file_split: FileSplit | None = None
        if cfg.data.input is None:
            self.source: SampleSource | None = synthetic_source(cfg.data, cfg.wireless.channel)
            probe = self.source(2, np.random.default_rng(0))
        else:
            what = f"{cfg.data.input} (data.input)"
            self.source = None
            self.file = probe = load_dataset_file(cfg.data.input)
            check_labels(probe, self.num_beams, what)
            self.file_split = split_file_dataset(probe, cfg.partition, cfg.data.test_fraction, cfg.data.seed, what)
        self.shapes: dict[str, tuple[int, ...]] = probe.input_shapes
        self.bits_per_sample: dict[str, int] = dict(probe.bits_per_sample)
        self._partitions: OrderedDict[int, DevicePartition] = OrderedDict()
        self.prepared: PreparedCache | None = None
        """A device's cache of generated data and expert costs on its disk (module docstring); ``None``: none."""

    # ------------------------------------------------------------------ model

    @cached_property
    def template(self) -> MoE:
        """The initial mixture (seeded by ``train.seed``), never trained: copy it with :meth:`new_model`."""
        torch.manual_seed(self.cfg.train.seed)
        model = build_moe(self.cfg.model, self.shapes, self.num_beams)
        set_routing_cost_weight(model, self.cfg.train)  # fixed for the run: never an update to validate
        return model

    def new_model(self) -> MoE:
        """A fresh copy of :attr:`template`."""
        return copy.deepcopy(self.template)

    @cached_property
    def layout(self) -> PackedLayout:
        """How the parameters travel in messages: one flat array per group (:class:`PackedLayout`)."""
        return PackedLayout(self.template.state_dict(), self.cfg.federated.local_keys)

    @cached_property
    def codec(self) -> UpdateCodec:
        """How updates travel compressed (``federated.compression``,
        :class:`~fedmoe.federated.update_codec.UpdateCodec`)."""
        return UpdateCodec.from_config(self.layout, self.cfg.federated.compression)

    @cached_property
    def expert_costs(self) -> list[ExpertCost]:
        """Counted FLOPs per sample, parameters and input bits of every expert (from :attr:`prepared`
        when it holds them for this model)."""
        cache = self.prepared
        if cache is None:
            return expert_costs(self.template.experts, bits_per_sample=self.bits_per_sample)
        key = experts_key(self.cfg, self.shapes, self.bits_per_sample)
        num_experts = len(self.template.experts)
        got = cache.load("experts", key, check_expert_members(num_experts))
        if got is not None:
            return [ExpertCost(int(f), int(p), int(b), str(n)) for n, f, p, b in
                    zip(got["experts/names"], got["experts/flops"], got["experts/params"], got["experts/input_bits"])]
        costs = expert_costs(self.template.experts, bits_per_sample=self.bits_per_sample)
        cache.save("experts", key, {"experts/names": np.array([c.name for c in costs], dtype=str),
                                    "experts/flops": np.array([c.flops_per_sample for c in costs], dtype=np.int64),
                                    "experts/params": np.array([c.params for c in costs], dtype=np.int64),
                                    "experts/input_bits": np.array([c.input_bits for c in costs], dtype=np.int64)})
        return costs

    @cached_property
    def expert_flops(self) -> np.ndarray:
        """(E,) counted forward FLOPs per sample of every expert."""
        return np.array([c.flops_per_sample for c in self.expert_costs], dtype=np.float64)

    @cached_property
    def footprints(self) -> list[ExpertFootprint]:
        return [ExpertFootprint(c.flops_per_sample, c.input_bits, e.modalities)
                for e, c in zip(self.template.experts, self.expert_costs)]

    @cached_property
    def expert_modalities(self) -> np.ndarray:
        """(E, M) bool: the modalities (:data:`MODALITIES` order) each expert reads."""
        out = np.zeros((len(self.footprints), len(MODALITIES)), dtype=bool)
        for i, fp in enumerate(self.footprints):
            out[i, [MODALITIES.index(m) for m in fp.modalities]] = True
        return out

    # ------------------------------------------------------------------ devices and costs

    @cached_property
    def profiles(self) -> DeviceProfiles:
        """The ``num_devices`` devices of the cell, drawn as the centralised runner draws them
        (:func:`fedmoe.models.builder.device_costs_for_samples`, same seed: same devices)."""
        return sample_device_profiles(self.cfg.wireless, self.num_devices, np.random.default_rng(self.cfg.data.seed))

    @cached_property
    def trace(self) -> ChannelTrace | None:
        """The measured channel of ``wireless.trace`` (None without one): it replaces the random fading of
        every round (:func:`fedmoe.federated.round_channel.round_channel`)."""
        return load_trace(self.cfg.wireless, self.num_devices)

    @cached_property
    def equal_share_rate(self) -> np.ndarray:
        """Uplink rate of each device when all split the band evenly
        (:func:`fedmoe.wireless.devices.equal_share_rate`)."""
        return equal_share_rate(self.profiles, self.cfg.wireless)

    @cached_property
    def cost_reference(self) -> tuple[float, float]:
        """``(T_ref, E_ref)`` of the cost ``C``: the worst expert on the worst device at an equal uplink share."""
        matrices = expert_cost_matrices(self.footprints, self.profiles, self.equal_share_rate,
                                        self.cfg.model.latency_weight)
        return cost_reference(matrices)

    def cost_row(self, device_id: int, rate_bps: float) -> np.ndarray:
        """(E,) float32: device ``device_id``'s cost ``C`` of each expert at uplink rate ``rate_bps``."""
        m = expert_cost_matrices(self.footprints, self.profiles.subset([device_id]), np.array([rate_bps]),
                                 self.cfg.model.latency_weight, self.cost_reference)
        return m.cost[0].astype(np.float32)

    # ------------------------------------------------------------------ data

    def partition(self, device_id: int) -> DevicePartition:
        """Device ``device_id``'s training data, built lazily and cached (module docstring)."""
        key = int(device_id)
        part = self._partitions.get(key)
        if part is not None:
            self._partitions.move_to_end(key)
            return part
        if self.file is None:
            part = self._generated_partition(key)
        else:
            part = self._file_partition(key)
        if self.cfg.federated.partition_cache > 0:
            self._partitions[key] = part
            while len(self._partitions) > self.cfg.federated.partition_cache:
                self._partitions.popitem(last=False)
        return part

    def _generated_partition(self, device_id: int) -> DevicePartition:
        """Device ``device_id``'s generated data: from :attr:`prepared` when it holds them, else generated
        (and then kept there)."""
        pcfg, seed = self.cfg.partition, self.cfg.data.seed
        cache = self.prepared
        if cache is None:
            return make_device_partition(self.source, pcfg, seed, device_id, self.num_beams)
        key, name = partition_key(self.cfg, device_id), f"partition-{device_id}"
        got = cache.load_samples(name, key, local_size(pcfg, seed, device_id), self.shapes,
                                 partition_extra(len(MODALITIES), self.num_beams))
        if got is not None and "partition/dropped" in got[1]:
            samples, extra = got
            return DevicePartition(device_id, samples, device_modalities(pcfg, seed, device_id),
                                   device_degradation(pcfg, seed, device_id), extra["partition/dropped"],
                                   extra.get("partition/proportions"))
        part = make_device_partition(self.source, pcfg, seed, device_id, self.num_beams)
        extra = {"partition/dropped": np.asarray(part.dropped, dtype=np.int64)}
        if part.label_proportions is not None:
            extra["partition/proportions"] = np.asarray(part.label_proportions, dtype=np.float64)
        cache.save_samples(name, key, part.samples, extra)
        return part

    def _file_partition(self, device_id: int) -> DevicePartition:
        """Device ``device_id``'s training rows of the dataset file, with its sensors and degradation."""
        if not 0 <= device_id < self.num_devices:
            raise ValueError(f"device_id must be in [0, {self.num_devices}), got {device_id}")
        pcfg, seed = self.cfg.partition, self.cfg.data.seed
        samples = self.file.subset(self.file_split.train[device_id])  # type: ignore[union-attr]
        mask = device_modalities(pcfg, seed, device_id)
        degradation = device_degradation(pcfg, seed, device_id)
        samples, dropped = apply_degradation(apply_modality_mask(samples, mask), degradation, seed, device_id)
        return DevicePartition(device_id, samples, mask, degradation, dropped, None)

    def evaluation_size(self, device_id: int) -> int:
        """How many held-out samples device ``device_id`` has (:meth:`evaluation_data`), known
        without drawing them: ``max(1, round(data.test_fraction × samples_per_device))``; with
        ``data.input``, the size of its held-out rows."""
        if self.file_split is not None:
            return len(self.file_split.evaluation[int(device_id)])
        return max(1, int(round(self.cfg.partition.samples_per_device * self.cfg.data.test_fraction)))

    def evaluation_data(self, device_id: int) -> ISACSamples:
        """Device ``device_id``'s own held-out data: :meth:`evaluation_size` fresh samples (stream
        ``evaluation``; with ``data.input``, its held-out rows of the file) with the device's sensors
        and degradation, not cached."""
        pcfg, seed = self.cfg.partition, self.cfg.data.seed
        if self.file_split is not None:
            samples = self.file.subset(self.file_split.evaluation[int(device_id)])  # type: ignore[union-attr]
        else:
            samples = self._generated_evaluation(int(device_id))
        samples = apply_modality_mask(samples, device_modalities(pcfg, seed, int(device_id)))
        samples, _ = apply_degradation(samples, device_degradation(pcfg, seed, int(device_id)), seed, int(device_id))
        return samples

    def _generated_evaluation(self, device_id: int) -> ISACSamples:
        """Device ``device_id``'s fresh held-out samples (stream ``evaluation``), through :attr:`prepared`."""
        n, cache = self.evaluation_size(device_id), self.prepared
        draw = lambda: self.source(n, device_rng(self.cfg.data.seed, device_id, "evaluation"))  # noqa: E731
        if cache is None:
            return draw()
        key, name = partition_key(self.cfg, device_id), f"evaluation-{device_id}"
        got = cache.load_samples(name, key, n, self.shapes)
        if got is not None:
            return got[0]
        samples = draw()
        cache.save_samples(name, key, samples)
        return samples

    def server_test_set(self) -> ISACSamples:
        """``federated.test_samples`` fresh samples for the server-side evaluation (a stream no device draws);
        with ``data.input``, the file's test rows (:mod:`fedmoe.data.file_split`)."""
        if self.file_split is not None:
            return self.file.subset(self.file_split.test)  # type: ignore[union-attr]
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.data.seed, _SERVER_TEST_STREAM]))
        return self.source(self.cfg.federated.test_samples, rng)

    def server_validation_set(self, num_samples: int | None = None) -> ISACSamples:
        """``num_samples`` (default ``federated.test_samples``) fresh samples of a third stream, drawn by neither the
        devices nor the test set: for choosing among configurations without looking at the test set. A dataset file
        (``data.input``) has no such split (``ValueError``)."""
        if self.source is None:
            raise ValueError("data.input: a dataset file has a train and a test split only, no validation split")
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.data.seed, _SERVER_VALIDATION_STREAM]))
        return self.source(self.cfg.federated.test_samples if num_samples is None else num_samples, rng)
