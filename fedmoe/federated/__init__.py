"""Federated learning of the mixture without Flower: what the ServerApp (:mod:`strategies`) and
the ClientApp (:mod:`clients`) are built from.

:mod:`~fedmoe.federated.world`
    what the server and every device derive from the scenario alone (:class:`~fedmoe.federated.world.ScenarioWorld`);
:mod:`~fedmoe.federated.parameters`
    which parameters are aggregated over whom, and how they travel packed per group;
:mod:`~fedmoe.federated.selection`, :mod:`~fedmoe.federated.selection_baselines`
    the channel of a round, device selection and resource-block allocation; selection baselines from the
    literature (Oort, power-of-choice, age of update);
:mod:`~fedmoe.federated.dynamics`, :mod:`~fedmoe.federated.availability`
    devices that change across rounds: who is on (Markov chains or a trace) and their batteries;
:mod:`~fedmoe.federated.local`
    one device's part of a round: local training and evaluation;
:mod:`~fedmoe.federated.evaluation`, :mod:`~fedmoe.federated.reference`
    server-side evaluation and checkpoints; the centralised reference of a run;
:mod:`~fedmoe.federated.report`, :mod:`~fedmoe.federated.run_folder`
    the run folder (``metrics.json``, ``rounds.csv``, plots); what a run may find there before it
    starts (``--resume``, ``--force``) and leaves there when it fails;
:mod:`~fedmoe.federated.resume`, :mod:`~fedmoe.federated.device_state`
    checkpoint and resume: the server's state, and what a device keeps on its own disk;
:mod:`~fedmoe.federated.faults`
    faults injected into simulated devices.
"""

# The built-in selection baselines register themselves in SELECTION_POLICIES. Importing any module of this
# package runs this first, so they are there wherever a policy is looked up (selection cannot import them:
# they build on it).
from fedmoe.federated import selection_baselines as _selection_baselines  # noqa: E402,F401
