"""``data.input`` / ``fedmoe run --input``: a dataset file split into the server's test set and the
devices' data (per sample or per sequence), and federated."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.cli import main
from fedmoe.config import ConfigError
from fedmoe.data.deepsense import load_deepsense_scenario
from fedmoe.data.file_split import split_file_dataset
from fedmoe.data.samples import ISACSamples
from fedmoe.errors import UsageError
from fedmoe.federated.parameters import to_numpy
from fedmoe.federated.world import ScenarioWorld, world_for
from fedmoe.flower import to_record
from fedmoe.strategies import ExpertWise
from tests.conftest import random_samples
from tests.data.deepsense.conftest import write_scenario
from tests.federated.conftest import LocalGrid, tiny_config


@pytest.fixture
def sequences_file(tmp_path):
    """120 random samples in 20 sequences of 6 rows (sequence s holds rows 6 s .. 6 s + 5)."""
    s = random_samples(120, np.random.default_rng(0))
    s.conditions["seq_index"] = np.repeat(np.arange(100, 120), 6).astype(np.int64)
    return s.save(tmp_path / "seq.npz")


def test_per_sequence_split_keeps_each_sequence_in_one_place(sequences_file):
    cfg = tiny_config(data={"input": str(sequences_file)}, partition={"group": "sequence"})
    split = ScenarioWorld(cfg).file_split
    owner = np.full(120, -2)
    owner[split.test] = -1
    for d in range(4):
        rows = np.concatenate([split.train[d], split.evaluation[d]])
        assert len(split.train[d]) >= 1 and len(split.evaluation[d]) == max(1, round(0.2 * len(rows)))
        assert (owner[rows] == -2).all()  # disjoint
        owner[rows] = d
    assert (owner >= -1).all()  # every row is somewhere
    places = owner.reshape(20, 6)
    assert (places == places[:, :1]).all()  # a sequence's six rows are in one place
    assert len(split.test) == 6 * round(0.2 * 20)  # 4 whole sequences held out


def test_per_sample_iid_split_sizes(sequences_file):
    cfg = tiny_config(data={"input": str(sequences_file)})  # partition.group = sample, label_skew = iid
    split = ScenarioWorld(cfg).file_split
    assert len(split.test) == 24  # round(0.2 * 120)
    for d in range(4):
        assert len(split.train[d]) + len(split.evaluation[d]) == 24  # 96 rows over 4 devices
        assert len(split.evaluation[d]) == 5  # round(0.2 * 24)
    places = np.zeros(120, dtype=int)
    for d in range(4):
        places[split.train[d]] = d + 1
    seq_of_device = [set(np.repeat(np.arange(20), 6)[places == d + 1]) for d in range(4)]
    assert len(set.union(*seq_of_device)) < sum(len(s) for s in seq_of_device)  # sequences are shared here


def test_the_world_serves_the_files_rows(sequences_file):
    cfg = tiny_config(data={"input": str(sequences_file)}, partition={"group": "sequence"})
    world = ScenarioWorld(cfg)
    data = ISACSamples.load(sequences_file)
    split = split_file_dataset(data, cfg.partition, cfg.data.test_fraction, cfg.data.seed)
    for d in range(4):
        np.testing.assert_array_equal(world.partition(d).samples.labels["beam"], data.labels["beam"][split.train[d]])
        np.testing.assert_array_equal(world.evaluation_data(d).labels["beam"],
                                      data.labels["beam"][split.evaluation[d]])
        assert world.evaluation_size(d) == len(split.evaluation[d])
    np.testing.assert_array_equal(world.server_test_set().inputs["lidar"], data.inputs["lidar"][split.test])
    assert world.shapes == data.input_shapes and world.bits_per_sample == data.bits_per_sample


def test_one_federated_round_on_an_imported_deepsense_scenario(tmp_path):
    one = load_deepsense_scenario(write_scenario(tmp_path / "s31", use_jpeg=False).root)
    parts = []
    for k in range(12):  # 12 copies of the 4-row scenario, one sequence each
        part = one.subset(np.arange(4))
        part.conditions["seq_index"] = np.full(4, k, dtype=np.int64)
        parts.append(part)
    path = ISACSamples.concat(parts).save(tmp_path / "s31.npz")
    cfg = tiny_config(data={"input": str(path)}, partition={"group": "sequence"})
    world = world_for(cfg)
    assert world.shapes["radar"] == (1, 16, 32) and world.shapes["rf"] == (64,)  # DeepSense shapes, not synthetic
    strategy = ExpertWise(world)
    strategy.start(LocalGrid(4), to_record(to_numpy(world.template.state_dict())), num_rounds=1)
    assert strategy.history[0].completed == 4 and strategy.history[0].failed == 0


def test_unusable_files_and_modes_are_refused(sequences_file, tmp_path, capsys):
    with pytest.raises(ConfigError, match="data.input.*federated only"):
        tiny_config(data={"input": str(sequences_file)}, mode="split")
    with pytest.raises(UsageError, match=r"20 sequences are too few for a test set of 4 and partition.num_devices=17"):
        ScenarioWorld(tiny_config(data={"input": str(sequences_file)},
                                  partition={"group": "sequence", "num_devices": 17}))
    s = random_samples(40, np.random.default_rng(1))
    s.labels["beam"][:] = -1
    s.conditions["labelled"] = np.zeros(40, dtype=bool)
    unlabelled = s.save(tmp_path / "u.npz")
    assert main(["run", "--input", str(unlabelled), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "u.npz (data.input): holds unlabelled rows" in err and len(err.strip().splitlines()) == 1
    assert main(["run", "--input", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "nope.npz: no such dataset file (--input)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
