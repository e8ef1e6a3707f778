"""fedmoe: federated and split learning of multimodal mixture-of-experts models over wireless devices.

How the parts fit together is in ``docs/architecture.md``; the papers cited as ``[P000]`` …
``[P007]`` are in ``docs/references.md``.

Subpackages
-----------
:mod:`fedmoe.wireless`
    TR 38.901 channel and fading, antennas and codebooks, link budget, inter-cell interference, OFDMA uplink, device
    latency and energy, the allocator, measured channel traces, devices moving between rounds.
:mod:`fedmoe.data`
    The embedded synthetic multimodal ISAC generator, the DeepSense 6G loader, partitioners and dataset statistics,
    channel trace formats.
:mod:`fedmoe.models`
    Modality experts, gates and their backbones, router losses, task heads, the ``MoE`` module, costs, the oracle.
:mod:`fedmoe.federated`
    One device's federated round without Flower, device selection, parameter groups, semi-asynchronous events,
    evaluation, reports, resume.
:mod:`fedmoe.split`
    Split learning's device and server halves without Flower, feature links, and distributed experts.
:mod:`fedmoe.v2i`
    V2I camera scheduling and beamforming ([P002]): environment, agents, training, exact reference.
:mod:`fedmoe.flower`
    The only Flower import of the library: numpy arrays to and from Flower records.
:mod:`fedmoe.plugins`
    fedmoe's radio, selection, virtual clock and reply validation as wrappers for any Flower strategy and model.
:mod:`fedmoe.strategies`
    The server side on Flower: ``ExpertWise``, ``PlainFedAvg`` and ``FedBuff``, aggregation rules by name, reply
    validation, device discovery, the ServerApp and the server loops of the split, distributed and V2I modes.
:mod:`fedmoe.clients`
    The device side on Flower: one ClientApp whose message handlers serve every mode.
:mod:`fedmoe.deploy`
    Real deployment: certificates and keys, Flower's executables, a SuperLink and SuperNodes on 127.0.0.1
    (private network).

Modules
-------
:mod:`fedmoe.config`
    Pydantic models for every configuration, loaded from TOML, with one-line errors.
:mod:`fedmoe.registry`
    The name -> object registry behind every pluggable part.
:mod:`fedmoe.files`
    Files written whole or not at all; output folders removed when a command fails; state files read only if private.
:mod:`fedmoe.device_series`
    Per-device time-series CSV files (channel and availability traces): header, ids, times, cells, one-line errors.
:mod:`fedmoe.npzfile`
    ``.npz`` archives that may be hostile: names and sizes checked from the headers first, never pickles.
:mod:`fedmoe.memory`
    The memory this machine has available; refusing work estimated not to fit.
:mod:`fedmoe.errors`
    ``UsageError``: the base class of the errors a user's input causes (one line, exit status 2).
:mod:`fedmoe.arguments`
    Parsers of option values shared by the command line and the benchmarks.
:mod:`fedmoe.overrides`
    ``key.path=value`` overrides of a scenario's config values (``--set``, a run config's ``overrides``).
:mod:`fedmoe.scenarios`
    Scenarios by name (``fedmoe/scenarios/*.toml``, package data), ``extends`` and overrides.
:mod:`fedmoe.training`
    The resource-aware loss and two-stage training of the mixture, with diagnostics.
:mod:`fedmoe.centralised`
    One centralised experiment: data, mixture, per-device costs, training, test summary.
:mod:`fedmoe.pareto`
    λ sweeps of the resource-aware loss and their accuracy–cost Pareto front.
:mod:`fedmoe.simulation`
    ``fedmoe run``: a Flower simulation of the scenario on the Ray backend, with a progress bar and resume.
:mod:`fedmoe.cli`
    The ``fedmoe`` command line.
"""

__version__ = "0.1.0"
