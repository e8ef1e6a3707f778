"""Channel trace formats by name, and the trace a scenario's ``wireless.trace`` describes.

A format is ``reader(path, trace_cfg, wireless, num_devices, **settings) -> ChannelTrace`` in
:data:`TRACE_FORMATS` (add one with ``TRACE_FORMATS.register("name", reader)``); ``settings`` are
the replay rules of :class:`~fedmoe.wireless.trace.ChannelTrace` and must be passed on to it.

``fedmoe``
    the project's CSV (:mod:`fedmoe.wireless.trace_file`).
``deepsense``
    a DeepSense scenario folder or CSV, calibrated to gains (:mod:`fedmoe.data.deepsense.trace`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fedmoe.config import FedMoEConfig, TraceConfig, WirelessConfig, with_absolute_files
from fedmoe.registry import Registry
from fedmoe.wireless.ofdma import linear_to_db, noise_psd_w_hz
from fedmoe.wireless.trace import ChannelTrace
from fedmoe.wireless.trace_file import read_trace_csv

TraceReader = Callable[..., ChannelTrace]
"""``reader(path, trace_cfg, wireless, num_devices, **settings) -> ChannelTrace``."""

TRACE_FORMATS: Registry[TraceReader] = Registry("channel trace format")


def noise_dbm_per_rb(wireless: WirelessConfig) -> float:
    """``N_rb = N0 + NF + 10 log10 B_rb`` in dBm: the noise power in one resource block."""
    ch = wireless.channel
    n0 = noise_psd_w_hz(ch.noise_psd_dbm_hz, ch.noise_figure_db)
    return float(linear_to_db(n0 * wireless.uplink.resource_block_hz)) + 30.0


@TRACE_FORMATS.register("fedmoe")
def _fedmoe(path: Path, trace: TraceConfig, wireless: WirelessConfig, num_devices: int,
            **settings: Any) -> ChannelTrace:
    return read_trace_csv(path, num_devices, **settings)


@TRACE_FORMATS.register("deepsense")
def _deepsense(path: Path, trace: TraceConfig, wireless: WirelessConfig, num_devices: int,
               **settings: Any) -> ChannelTrace:
    from fedmoe.data.deepsense.trace import deepsense_trace

    ds = trace.deepsense
    return deepsense_trace(path, num_devices, noise_dbm_per_rb(wireless), csv_name=ds.csv,
                           sample_interval_s=ds.sample_interval_s, median_snr_db=ds.median_snr_db,
                           reference_tx_power_dbm=ds.reference_tx_power_dbm,
                           blockage_drop_db=ds.blockage_drop_db, num_beams=ds.num_beams, **settings)


def load_trace(wireless: WirelessConfig, num_devices: int) -> ChannelTrace | None:
    """The trace of ``wireless.trace`` for ``num_devices`` devices (None without one); an unknown
    format fails naming ``wireless.trace.format`` and the known ones."""
    cfg = wireless.trace
    if cfg is None:
        return None
    reader = TRACE_FORMATS.check(cfg.format, "wireless.trace.format")
    return reader(Path(cfg.path), cfg, wireless, num_devices, between=cfg.between, after_end=cfg.after_end,
                  start_s=cfg.start_s, blocked_outage=cfg.blocked == "outage")


def checked_trace(cfg: FedMoEConfig) -> FedMoEConfig:
    """``cfg`` with its file settings made absolute (:func:`fedmoe.config.with_absolute_files`: every process of a
    run opens them, whatever its working folder), after reading the trace once so that a bad trace file is
    refused before a run starts; ``cfg`` itself when it has no trace. ``fedmoe run`` and ``fedmoe deploy local``
    both call it."""
    if cfg.wireless.trace is None:
        return cfg
    cfg = with_absolute_files(cfg)
    load_trace(cfg.wireless, cfg.partition.num_devices)
    return cfg
