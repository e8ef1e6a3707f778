"""A real deployment where one SuperNode's node config names a device the scenario does not have
(``partition-id=5`` of 2): the run fails with one line naming the node and the node-config value, and every
process the launcher started is stopped by PID. Marked ``deploy`` (``make test-deploy``), about 1–2 minutes."""

from __future__ import annotations

import re

import psutil
import pytest

from fedmoe.deploy.local import DeployError, LocalCluster, check_result

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]


def test_a_supernode_with_a_wrong_partition_id_fails_the_run_in_one_line(tmp_path):
    cluster = LocalCluster(tmp_path / "deploy", nodes=2, stream=False, partition_ids=[0, 5])
    try:
        cluster.start()
        result = cluster.run("default", ["partition.num_devices=2", "federated.clients_per_round=2",
                                          "federated.rounds=1", "federated.stage1_rounds=1"], timeout=600)
    finally:
        members = {p.pid for p in cluster.procs.members()}
        report = cluster.stop()
    with pytest.raises(DeployError) as err:  # what `fedmoe deploy local` reports for such a run
        check_result(result)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    assert re.search(r"node \d+ failed the device query: .*node config partition-id 5 is outside \[0, 2\)", message), \
        message
    assert members <= set(report["terminated"]) and cluster.procs.members() == []
    for pid in members:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
