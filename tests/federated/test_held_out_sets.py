"""The server's held-out sets: the test set and a validation set are distinct streams of the same generator, each
the same for the same seed, and the evaluator scores whichever it is given."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.federated.evaluation import ServerEvaluator
from fedmoe.federated.world import world_for
from tests.federated.conftest import tiny_config


def test_validation_and_test_sets_are_different_draws_and_repeatable():
    world = world_for(tiny_config())
    test, val = world.server_test_set(), world.server_validation_set()
    assert len(val) == len(test) == world.cfg.federated.test_samples
    assert not np.array_equal(val.inputs["gps"], test.inputs["gps"])
    assert not np.array_equal(val.inputs["gps"], world.partition(0).samples.inputs["gps"][:len(val)])
    np.testing.assert_array_equal(world_for(tiny_config()).server_validation_set().inputs["gps"], val.inputs["gps"])
    assert len(world.server_validation_set(7)) == 7
    other = world_for(tiny_config(data={"seed": 1})).server_validation_set()
    assert not np.array_equal(other.inputs["gps"], val.inputs["gps"])


def test_the_evaluator_scores_the_set_it_is_given():
    world = world_for(tiny_config())
    arrays = {k: v.detach().numpy() for k, v in world.template.state_dict().items()}
    on_test = ServerEvaluator(world, last_round=1).evaluate(1, arrays)
    val = world.server_validation_set()
    evaluator = ServerEvaluator(world, last_round=1, held_out=val)
    assert evaluator.test is val
    on_val = evaluator.evaluate(1, arrays)
    same = ServerEvaluator(world, last_round=1, held_out=world.server_test_set()).evaluate(1, arrays)
    assert same == on_test  # the given set is scored exactly as the default one
    assert on_val["accuracy"] != pytest.approx(on_test["accuracy"]) and on_val["power_ratio_db"] != on_test[
        "power_ratio_db"]
