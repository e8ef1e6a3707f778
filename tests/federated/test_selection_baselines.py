"""The selection baselines from the literature (``oort``, ``power-of-choice``, ``age-weighted``) on a round
with a choice to make (the ``crowded`` fixture): their deterministic part against a brute force over every
subset of devices, their draws against the probabilities worked out by hand, and the age policy over rounds."""

from __future__ import annotations

import numpy as np
import pytest

from fedmoe.config import ConfigError, FedMoEConfig, OortOptions, PowerOfChoiceOptions, SelectionOptions, load_config
from fedmoe.federated.selection import SELECTION_POLICIES, Participation, RoundDemand, SelectionContext, round_costs
from fedmoe.registry import UnknownNameError
from fedmoe.wireless.ofdma import uplink_rate
from tests.federated.conftest import CROWDED_RB, assert_fits, best_by_brute_force, needs_by_hand


def _ctx(ctx: SelectionContext, per_round: int | None = None, seed: int = 0, **options) -> SelectionContext:
    return SelectionContext(ctx.wireless, ctx.per_round if per_round is None else per_round, ctx.deadline_s,
                            np.random.default_rng(seed), SelectionOptions(**options))


def _latency_on_share(demand: RoundDemand, ctx: SelectionContext) -> np.ndarray:
    """Each device's round latency on ⌊N_rb / m⌋ blocks, from the cost model (not the allocator)."""
    share = CROWDED_RB // ctx.per_round
    t = np.empty(len(demand.bits))
    for k in range(len(t)):
        prof = demand.profiles.subset([k])
        rate = uplink_rate(np.array([share]), ctx.wireless.uplink.resource_block_hz, prof.tx_power_w, prof.gain,
                           ctx.noise_psd_w_hz)
        t[k] = round_costs(prof, demand.flops[[k]], demand.bits[[k]], rate)[0][0]
    return t


def _oort_by_hand(demand: RoundDemand, ctx: SelectionContext, hist: Participation, among: list[int]) -> np.ndarray:
    opts = ctx.options.oort
    u = demand.samples * demand.loss
    t = _latency_on_share(demand, ctx)
    util = np.zeros(len(u))
    for k in among:
        bonus = np.sqrt(opts.staleness * np.log(hist.round) / hist.last_round[k])
        penalty = (ctx.deadline_s / t[k]) ** opts.alpha if t[k] > ctx.deadline_s else 1.0
        util[k] = (u[k] / u[among].max() + bonus) * penalty
    return util


# Every feasible device has taken part (device 9 cannot meet the deadline), at various rounds before R = 6.
HEARD = Participation(6, np.array([1, 5, 2, 4, 3, 5, 1, 2, 5, 0]), np.array([1, 2, 1, 3, 1, 2, 1, 1, 4, 0]))


@pytest.mark.parametrize("alpha, staleness", [(2.0, 0.1), (0.0, 0.1), (2.0, 0.0), (5.0, 1.0)])
def test_oort_without_exploration_is_the_best_set_of_oort_utility(crowded, alpha, staleness):
    demand, ctx = crowded
    demand.history = HEARD
    ctx = _ctx(ctx, oort=OortOptions(epsilon=0.0, alpha=alpha, staleness=staleness))
    need = needs_by_hand(demand, ctx)
    explored = [k for k in range(len(need)) if need[k] > 0]
    t = _latency_on_share(demand, ctx)
    assert any(t[k] > ctx.deadline_s for k in explored)  # the system penalty applies to someone
    util = _oort_by_hand(demand, ctx, HEARD, explored)
    chosen = SELECTION_POLICIES.get("oort")(demand, ctx)
    assert_fits(chosen, need, ctx)
    assert util[chosen].sum() == pytest.approx(best_by_brute_force(util, need, ctx.per_round, CROWDED_RB), rel=1e-12)
    again = SELECTION_POLICIES.get("oort")(demand, _ctx(ctx, seed=1, oort=ctx.options.oort))
    np.testing.assert_array_equal(chosen, again)  # ε = 0 and everyone heard from: no draw


def test_oort_explores_devices_never_heard_from_by_speed(crowded):
    demand, ctx = crowded
    fresh = [6, 7, 8]
    last = HEARD.last_round.copy()
    last[fresh] = 0
    demand.history = Participation(6, last, np.where(last > 0, 1, 0))
    opts = OortOptions(epsilon=0.25, alpha=2.0)  # one of the four slots explores, three exploit
    need = needs_by_hand(demand, ctx)
    heard = [k for k in range(len(need)) if need[k] > 0 and k not in fresh]
    util = _oort_by_hand(demand, _ctx(ctx, oort=opts), demand.history, heard)
    speed = 1.0 / _latency_on_share(demand, ctx)
    draws = 1500
    counts = dict.fromkeys(fresh, 0)
    exploit = None
    for seed in range(draws):
        chosen = SELECTION_POLICIES.get("oort")(demand, _ctx(ctx, seed=seed, oort=opts))
        assert_fits(chosen, need, ctx)
        mine = [k for k in chosen if k not in fresh]
        if exploit is None:
            exploit = mine
            assert util[mine].sum() == pytest.approx(best_by_brute_force(util, need, 3, CROWDED_RB, heard), rel=1e-12)
        assert mine == exploit and len(chosen) == 4
        (drawn,) = [k for k in chosen if k in fresh]
        counts[drawn] += 1
    room = CROWDED_RB - need[exploit].sum()
    fits = [k for k in fresh if need[k] <= room]
    assert len(fits) >= 2  # the draw is a real choice
    for k in fresh:
        p = speed[k] / speed[fits].sum() if k in fits else 0.0
        assert abs(counts[k] - draws * p) <= 5 * np.sqrt(draws * p * (1 - p)) + 1


def test_oort_first_round_explores_only(crowded):
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    for seed in range(20):
        chosen = SELECTION_POLICIES.get("oort")(demand, _ctx(ctx, seed=seed))
        assert_fits(chosen, need, ctx)
        assert chosen.size == ctx.per_round or need[np.setdiff1d(np.flatnonzero(need > 0), chosen)].min() > \
            CROWDED_RB - need[chosen].sum()  # stops only when nobody else fits


@pytest.mark.parametrize("far_loss", [None, 10.0])
def test_power_of_choice_with_every_candidate_is_the_best_set_of_loss(crowded, far_loss):
    """All feasible devices are candidates (d >= 9): the m of highest loss when they fit together (the fixture's
    losses), else the subset of largest total loss that fits (the far device given the highest loss)."""
    demand, ctx = crowded
    ctx = _ctx(ctx, power_of_choice=PowerOfChoiceOptions(candidates=10))
    need = needs_by_hand(demand, ctx)
    if far_loss is not None:
        demand.loss[np.argmax(need)] = far_loss
    feasible = np.flatnonzero(need > 0)
    top = feasible[np.argsort(-demand.loss[feasible])[:ctx.per_round]]
    chosen = SELECTION_POLICIES.get("power-of-choice")(demand, ctx)
    assert_fits(chosen, need, ctx)
    best = best_by_brute_force(demand.loss, need, ctx.per_round, CROWDED_RB)
    assert demand.loss[chosen].sum() == pytest.approx(best, rel=1e-12)
    if far_loss is None:
        np.testing.assert_array_equal(chosen, np.sort(top))
    else:
        assert need[top].sum() > CROWDED_RB  # the blocks bind


def test_power_of_choice_draws_by_data_size_and_keeps_the_highest_loss(crowded):
    """d = 2, m = 1: device k is kept when drawn with a device of lower loss; the pair {i, j} is drawn
    (without replacement, ∝ samples) with probability p_i p_j / (1 − p_i) + p_j p_i / (1 − p_j)."""
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    pool = [k for k in range(len(need)) if need[k] > 0]
    p = dict(zip(pool, demand.samples[pool] / demand.samples[pool].sum()))
    expected = {k: sum(p[k] * p[j] / (1 - p[k]) + p[j] * p[k] / (1 - p[j])
                       for j in pool if j != k and demand.loss[j] < demand.loss[k]) for k in pool}
    assert abs(sum(expected.values()) - 1) < 1e-12
    draws = 3000
    counts = dict.fromkeys(range(len(need)), 0)
    for seed in range(draws):
        (k,) = SELECTION_POLICIES.get("power-of-choice")(
            demand, _ctx(ctx, 1, seed, power_of_choice=PowerOfChoiceOptions(candidates=2)))
        counts[int(k)] += 1
    for k in range(len(need)):
        q = expected.get(k, 0.0)
        assert abs(counts[k] - draws * q) <= 5 * np.sqrt(draws * q * (1 - q)) + 1


def test_power_of_choice_needs_samples_and_losses(crowded):
    demand, ctx = crowded
    demand.samples = None
    with pytest.raises(ValueError, match="needs RoundDemand.samples"):
        SELECTION_POLICIES.get("power-of-choice")(demand, ctx)


@pytest.mark.parametrize("exponent", [1.0, 2.0, 0.5])
def test_age_weighted_is_the_best_set_of_age_weight(crowded, exponent):
    demand, ctx = crowded
    demand.history = HEARD
    ctx = _ctx(ctx, age={"exponent": exponent})
    need = needs_by_hand(demand, ctx)
    weight = (6 - HEARD.last_round).astype(float) ** exponent
    chosen = SELECTION_POLICIES.get("age-weighted")(demand, ctx)
    assert_fits(chosen, need, ctx)
    assert weight[chosen].sum() == pytest.approx(best_by_brute_force(weight, need, ctx.per_round, CROWDED_RB),
                                                 rel=1e-12)


def test_age_weighted_reaches_the_far_device_that_max_devices_starves(crowded):
    demand, ctx = crowded
    need = needs_by_hand(demand, ctx)
    far = int(np.argmax(need))
    assert need[far] == CROWDED_RB  # feasible alone, and only alone
    seen = {}
    for policy in ("deadline-max-devices", "age-weighted"):
        hist = Participation.fresh(len(need))
        for _ in range(30):
            demand.history = hist
            chosen = SELECTION_POLICIES.get(policy)(demand, ctx)
            assert_fits(chosen, need, ctx)
            hist = hist.after(chosen)
        seen[policy] = hist.times
    assert seen["deadline-max-devices"][far] == 0
    assert seen["age-weighted"][far] >= 1
    assert (seen["age-weighted"][need > 0] >= 1).all()  # nobody who can make it is starved


def test_selection_options_are_validated(tmp_path):
    cfg = FedMoEConfig()
    assert cfg.federated.selection_options.oort.epsilon == 0.2
    with pytest.raises(ValueError, match="at least clients_per_round"):
        FedMoEConfig.model_validate({"federated": {"clients_per_round": 5,
                                                   "selection_options": {"power_of_choice": {"candidates": 3}}}})
    path = tmp_path / "bad.toml"
    for body, field in [("[federated.selection_options.oort]\nepsilon = 1.5\n", "epsilon"),
                        ("[federated.selection_options.oort]\nbeta = 1\n", "beta"),
                        ("[federated.selection_options.age]\nexponent = 0\n", "exponent")]:
        path.write_text(body)
        with pytest.raises(ConfigError, match=field) as err:
            load_config(path)
        assert "\n" not in str(err.value)
    with pytest.raises(UnknownNameError, match="unknown selection policy 'oortt'; known: age-weighted"):
        SELECTION_POLICIES.check("oortt", "federated.selection")


def test_history_must_cover_the_round_devices(crowded):
    demand, ctx = crowded
    demand.history = Participation.fresh(3)
    with pytest.raises(ValueError, match="covers 3 devices"):
        SELECTION_POLICIES.get("age-weighted")(demand, ctx)


def test_expert_wise_gives_the_policies_the_rounds_history():
    """The strategy fills ``RoundDemand.history`` from its round records: with devices 0 and 1 heard in round 1 and
    device 2 in round 2, round 3's two oldest are device 3 (never, age 3) and one of 0 and 1 (age 2)."""
    from flwr.app import ConfigRecord

    from fedmoe.federated.parameters import to_numpy as state_to_numpy
    from fedmoe.federated.rounds import RoundRecord
    from fedmoe.federated.world import world_for
    from fedmoe.flower import to_record
    from fedmoe.strategies import ExpertWise
    from tests.federated.conftest import LocalGrid, tiny_config

    cfg = tiny_config(federated={"selection": "age-weighted", "clients_per_round": 2})
    strategy = ExpertWise(world_for(cfg))
    for r, devices in ((1, [0, 1]), (2, [2])):
        strategy.ledger.history.append(RoundRecord(r, 1, len(devices), len(devices), 0, 1.0, 1.0, 1.0, float(r),
                                                   1.0, 1.0, devices=devices))
    grid = LocalGrid(strategy.world.num_devices)
    arrays = to_record(state_to_numpy(strategy.world.template.state_dict()))
    msgs = list(strategy.configure_train(3, arrays, ConfigRecord(), grid))
    device_of = {d.node_id: d.device_id for d in strategy.devices.values()}
    chosen = sorted(device_of[m.metadata.dst_node_id] for m in msgs)
    assert len(chosen) == 2 and 3 in chosen and 2 not in chosen
