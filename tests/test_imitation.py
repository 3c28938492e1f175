"""Imitation warm start: return bookkeeping, and that cloning actually reproduces an expert."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents.imitation import Demonstrations, collect, fit_normalisation, pretrain, student_fn
from model.profile_schema import example_profile, save_profile


def _demos(rewards, ends):
    n = len(rewards)
    return Demonstrations(np.zeros((n, 2), np.float32), np.ones((n, 3), bool), np.zeros(n, np.int64),
                          np.asarray(rewards, float), ends)


def test_returns_to_go_and_running_returns_stop_at_episode_ends():
    d = _demos([1.0, 2.0, 4.0, 8.0, 16.0], [3, 5])
    np.testing.assert_allclose(d.returns_to_go(0.5), [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4, 8 + 8, 16])
    np.testing.assert_allclose(d.running_returns(0.5), [1, 2.5, 5.25, 8, 20])
    both = d.extend(_demos([1.0], [1]))
    assert both.episode_ends == [3, 5, 6] and len(both) == 6


@pytest.fixture()
def small_env(tmp_path):
    prof = save_profile(example_profile(12), tmp_path / "p.json")
    return gym.make(envs.ENV_ID, profile=str(prof), split="train")


def test_cloning_a_static_rule_reproduces_it(small_env):
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    torch.manual_seed(0)
    demos = collect(small_env, "static-smallest", 6, seed=3, max_steps=60, progress=False)
    expert_action = int(np.bincount(demos.labels).argmax())
    assert np.all(demos.labels == expert_action) and np.isfinite(demos.expert_return)
    vn = VecNormalize(DummyVecEnv([lambda: small_env]), gamma=0.99)
    model = MaskablePPO("MlpPolicy", vn, n_steps=64, batch_size=64, seed=0, device="cpu")
    act = student_fn(model, vn)
    before = np.mean([act(o, m) == expert_action for o, m in zip(demos.obs, demos.masks)])
    fit_normalisation(vn, demos, 0.99)
    assert np.allclose(vn.obs_rms.mean, demos.obs.mean(axis=0), atol=1e-5)
    stats = pretrain(model, vn, demos, epochs=30, batch_size=128, lr=3e-3, progress=False)
    after = np.mean([act(o, m) == expert_action for o, m in zip(demos.obs, demos.masks)])
    assert before < 0.5 and after > 0.98 and stats["bc_accuracy"] > 0.98


def test_dagger_labels_the_students_states_with_the_expert(small_env):
    d = collect(small_env, "static-largest", 3, seed=1, max_steps=40, progress=False,
                student=lambda obs, mask: int(np.flatnonzero(mask)[0]), beta=0.0)
    # the student drove (expert return unknown), yet every label is the expert's single action
    assert np.isnan(d.expert_return) and np.unique(d.labels).size == 1


def test_randomised_demos_start_low_and_scale_the_capacity_deterministically(small_env):
    from agents.imitation import DemoRandomisation

    plain = collect(small_env, "schedutil", 4, seed=2, max_steps=5, progress=False)
    dr = DemoRandomisation(low_soc_frac=1.0, capacity_sigma=0.8, reserve_soc=0.05)
    rand = collect(small_env, "schedutil", 4, seed=2, max_steps=5, progress=False, randomise=dr)
    starts = [0] + rand.episode_ends[:-1]
    soc0 = rand.obs[starts, 0]  # feature 0: soc
    assert np.all((soc0 >= 0.05) & (soc0 <= 0.3)) and not np.allclose(soc0, plain.obs[starts, 0])
    # affordable power (feature 9) scales with the stored energy: capacity x soc, so the ratio is the capacity's
    ratio = (rand.obs[starts, 9] / rand.obs[starts, 0]) / (plain.obs[starts, 9] / plain.obs[starts, 0])
    assert np.unique(np.round(ratio, 3)).size == 4 and not np.allclose(ratio, 1.0)
    again = collect(small_env, "schedutil", 4, seed=2, max_steps=5, progress=False, randomise=dr)
    np.testing.assert_array_equal(again.obs, rand.obs)  # each episode's draw is its own stream
    hot = collect(small_env, "schedutil", 4, seed=2, max_steps=5, progress=False,
                  randomise=DemoRandomisation(hot_frac=1.0))
    shift = hot.obs[starts, 18] - plain.obs[starts, 18]  # feature 18: ambient_c
    assert np.all((shift > 0) & (shift <= 20)) and np.unique(np.round(shift, 6)).size == 4
    with pytest.raises(ValueError, match="capacity_scale"):
        small_env.reset(seed=0, options={"capacity_scale": 0.0})


def test_the_masked_oracles_labels_are_stepped_down_where_the_masks_forbid_them():
    """Where the env's masks hold a rule the masked oracle's plan does not (the budget rule), its forbidden label is
    stepped down to what the shield would run; an expert that reads the masks itself (a policy) keeps its label, and
    a rule that ignores them is held as before."""
    from agents.imitation import expert_label
    from envs.power_env import MicroLLMPowerEnv
    from runtime.rules import step_down

    env = MicroLLMPowerEnv(profile="profiles/reference-cpu.json")
    costs = env.costs
    big = int(np.argmax(costs.ept_j))

    class Expert:
        def __init__(self, name, uses_masks):
            self.name, self.uses_masks = name, uses_masks

        def predict(self, obs, episode_start=None):
            return np.array([big]), None

    mask = costs.ept_j < np.median(costs.ept_j)  # the largest configuration forbidden
    want = step_down(big, mask, costs.ept_j, costs.quality)
    assert mask[want] and want != big
    assert expert_label(Expert("oracle-masked", False), None, mask, costs, True, False) == want
    assert expert_label(Expert("rl", True), None, mask, costs, True, False) == big
    assert expert_label(Expert("schedutil", False), None, mask, costs, True, True) == want
    allowed = np.ones_like(mask)
    assert expert_label(Expert("oracle-masked", False), None, allowed, costs, True, False) == big


def test_cheapest_labels_tell_min_energy_steps_what_static_smallest_held_to_the_masks_runs(tmp_path):
    """--bc-min-energy-labels cheapest: every min-energy step (obj_min_energy set) is labelled with static-smallest
    stepped down to that step's mask, exactly as agents.evaluate holds the rule; every other step keeps the expert's
    label, and the drivers' observations, masks and rewards are untouched."""
    from agents.baselines import smallest_config
    from agents.imitation import cheapest_labels
    from runtime.dynamics import EnvParams, Objective
    from runtime.rules import step_down

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    params = EnvParams(objective=Objective(kind="mix"), floor_rule=True)
    env = gym.make(envs.ENV_ID, profile=str(prof), split="train", params=params)
    d = collect(env, "static-largest", 12, seed=4, max_steps=20, progress=False)
    u = env.unwrapped
    col = list(u.feature_names).index("obj_min_energy")
    me = d.obs[:, col] > 0.5
    assert 0 < me.sum() < len(d)  # the mix drew min-energy episodes and others
    out, changed = cheapest_labels(d, u.costs, u.feature_names, "mix")
    smallest = smallest_config(u.costs)
    want = [step_down(smallest, m, u.costs.ept_j, u.costs.quality) for m in d.masks[me]]
    np.testing.assert_array_equal(out.labels[me], want)
    np.testing.assert_array_equal(out.labels[~me], d.labels[~me])
    assert changed == int(np.count_nonzero(out.labels != d.labels)) > 0
    assert all(m[a] for m, a in zip(d.masks, out.labels))  # every label one the masks allow
    assert out.obs is d.obs and out.masks is d.masks and out.rewards is d.rewards
    assert out.episode_ends == d.episode_ends and not np.shares_memory(out.labels, d.labels)
    # without an objective block, only a min-energy env's steps can be told apart
    plain = gym.make(envs.ENV_ID, profile=str(prof), split="train").unwrapped
    d2 = collect(plain, "static-largest", 1, seed=1, max_steps=5, progress=False)
    assert cheapest_labels(d2, plain.costs, plain.feature_names, "min-energy")[1] > 0
    with pytest.raises(ValueError, match="no min-energy step"):
        cheapest_labels(d2, plain.costs, plain.feature_names, "max-quality")


def test_drawn_masks_fit_the_cost_ranking_beyond_the_pairs_the_floors_allowed():
    """--bc-drawn-masks: a share of the min-energy steps gets a random non-empty subset of every configuration as its
    mask and static-smallest's choice under it as the label, so the labels rank configurations the recorded masks
    never offered together; other steps and the recorded masks of the rest are untouched; reproducible from the rng."""
    from agents.baselines import smallest_config
    from agents.imitation import cheapest_labels
    from envs.power_env import MicroLLMPowerEnv
    from runtime.rules import step_down

    env = MicroLLMPowerEnv(profile="profiles/reference-cpu.json")
    costs, n = env.costs, env.action_space.n
    names = ["obj_min_energy", "x"]
    obs = np.zeros((400, 2), np.float32)
    obs[:300, 0] = 1.0  # 300 min-energy steps, 100 others
    masks = np.zeros((400, n), bool)
    masks[:, int(np.argmax(costs.ept_j))] = True  # the recorded masks allow one configuration only
    d = Demonstrations(obs, masks, np.full(400, int(np.argmax(costs.ept_j))), np.zeros(400), [400])
    out, _ = cheapest_labels(d, costs, names, "mix", drawn_share=0.5, rng=np.random.default_rng(1))
    drawn = np.flatnonzero((out.masks != d.masks).any(axis=1))
    assert 100 < drawn.size < 200 and drawn.max() < 300  # about half of the min-energy steps, no other
    assert out.masks[drawn].any(axis=1).all() and np.array_equal(d.masks[0], masks[0])  # the input is not written
    smallest = smallest_config(costs)
    for i in drawn:
        assert out.labels[i] == step_down(smallest, out.masks[i], costs.ept_j, costs.quality)
    assert np.unique(out.labels[drawn]).size > 3  # many configurations ranked, where the recorded masks offered one
    again, _ = cheapest_labels(d, costs, names, "mix", drawn_share=0.5, rng=np.random.default_rng(1))
    assert np.array_equal(again.masks, out.masks) and np.array_equal(again.labels, out.labels)
    with pytest.raises(ValueError, match="a share in"):
        cheapest_labels(d, costs, names, "mix", drawn_share=1.5)


def test_raised_floors_fill_the_gaps_between_the_users_floors():
    """--bc-raised-floors: a share of the min-energy steps has its floor raised, in the observation and the mask, to a
    value between it and the highest floor recorded; the mask keeps only what meets the new floor (when something
    does) and the label is static-smallest's choice under it; the other steps and the input are untouched."""
    from agents.baselines import smallest_config
    from agents.imitation import cheapest_labels
    from envs.power_env import MicroLLMPowerEnv
    from runtime.rules import step_down

    env = MicroLLMPowerEnv(profile="profiles/reference-cpu.json")
    costs = env.costs
    names = ["obj_min_energy", "quality_floor"]
    floors = np.r_[np.full(150, 0.30), np.full(150, 0.50), np.full(100, 0.30)]
    obs = np.c_[np.r_[np.ones(300), np.zeros(100)], floors].astype(np.float32)
    masks = np.tile(costs.quality >= 0.30, (400, 1))
    masks[150:300] = costs.quality >= 0.50
    d = Demonstrations(obs, masks, np.zeros(400, np.int64), np.zeros(400), [400])
    out, _ = cheapest_labels(d, costs, names, "mix", rng=np.random.default_rng(2), raised_share=0.5)
    raised = np.flatnonzero(out.obs[:, 1] != d.obs[:, 1])
    assert 50 < raised.size < 150 and raised.max() < 150  # only min-energy steps below the top floor can rise
    assert (out.obs[raised, 1] > 0.30).all() and (out.obs[raised, 1] <= 0.50 + 1e-6).all()
    assert np.array_equal(out.obs[300:], d.obs[300:]) and np.array_equal(out.masks[300:], d.masks[300:])
    smallest = smallest_config(costs)
    for i in raised:
        meets = masks[i] & (costs.quality >= out.obs[i, 1])
        assert np.array_equal(out.masks[i], meets if meets.any() else masks[i])
        assert out.labels[i] == step_down(smallest, out.masks[i], costs.ept_j, costs.quality)
    # the cheapest label rises with the floor: more than one configuration is taught where one floor taught one
    kept = np.setdiff1d(np.arange(150), raised)
    assert np.unique(out.labels[raised]).size > 1 and np.unique(out.labels[kept]).size == 1
    assert np.array_equal(d.obs[:, 1], floors.astype(np.float32))  # the input is not written
    with pytest.raises(ValueError, match="floor in the observation"):
        cheapest_labels(d, costs, ["obj_min_energy", "x"], "mix", raised_share=0.5)


def test_raised_budgets_show_the_env_s_own_allowance_under_the_larger_budget():
    """--bc-raised-budgets: a raised min-energy step reads exactly what the env shows after the same actions under
    the larger budget (budget_w and the allowance budget_left_frac, recomputed from the energy used so far); every
    other feature, the label and the mask stay; steps whose label misses the floor, and episodes whose budget
    changes, keep theirs."""
    from test_agents import PROFILE, trace

    from agents.imitation import cheapest_labels
    from envs.power_env import MicroLLMPowerEnv
    from runtime.dynamics import EnvParams, Objective

    def run(budget_w, actions, floor=0.0):
        env = MicroLLMPowerEnv(profile=PROFILE, traces=[trace(30, demand_tps=40.0, budget_w=budget_w)],
                               random_start=False,
                               params=EnvParams(objective=Objective(kind="min-energy", quality_floor=floor,
                                                                    goal_obs=True)))
        obs, _ = env.reset(seed=0)
        rows, masks = [obs], [env.action_masks()]
        for a in actions[:-1]:
            obs, *_ = env.step(int(a))
            rows.append(obs)
            masks.append(env.action_masks())
        return env, np.array(rows), np.array(masks)

    n = MicroLLMPowerEnv(profile=PROFILE, traces=[trace()]).action_space.n
    actions = np.arange(30) * 5 % n  # several configurations, dearer and cheaper
    env, low, m_low = run(0.3, actions)
    _, high, m_high = run(3.0, actions[:10])
    names = list(env.feature_names)
    cb, cf = names.index("budget_w"), names.index("budget_left_frac")
    d = Demonstrations(np.r_[low, high], np.r_[m_low, m_high], np.zeros(40, np.int64), np.zeros(40), [30, 40])
    out, _ = cheapest_labels(d, env.costs, names, "min-energy", rng=np.random.default_rng(3),
                             raised_budget_share=1.0, step_s=env.step_s, grace_s=env.params.budget_grace_s)
    raised = np.flatnonzero(out.obs[:, cb] != d.obs[:, cb])
    assert raised.size == 30 and raised.max() < 30  # every step of the 0.3 W episode; none of the top budget's
    assert (out.obs[raised, cb] > 0.3).all() and (out.obs[raised, cb] < 3.0).all()
    others = [i for i in range(len(names)) if i not in (cb, cf)]
    assert np.array_equal(out.obs[:, others], d.obs[:, others]) and out.masks is d.masks
    assert not np.array_equal(out.obs[raised, cf], d.obs[raised, cf])
    for k in (1, 7, 18, 29):  # the env itself under the drawn budget, the same actions
        _, again, _ = run(float(out.obs[k, cb]), actions)
        np.testing.assert_allclose(out.obs[k, cf], again[k, cf], rtol=1e-4, atol=1e-6)
    # a floor no configuration meets: the label misses it, so the budget may have bound it, and stays
    hard = d.obs.copy()
    hard[:, names.index("quality_floor")] = 0.99
    miss, _ = cheapest_labels(Demonstrations(hard, d.masks, d.labels, d.rewards, [30, 40]), env.costs, names,
                              "min-energy", rng=np.random.default_rng(3), raised_budget_share=1.0, step_s=env.step_s,
                              grace_s=env.params.budget_grace_s)
    assert np.array_equal(miss.obs, hard)
    # one episode with two budgets: the allowance cannot be recomputed, so it stays
    two = d.obs.copy()
    two[10:20, cb] = 0.6  # its first and last steps agree
    kept, _ = cheapest_labels(Demonstrations(two, d.masks, d.labels, d.rewards, [30, 40]), env.costs, names,
                              "min-energy", rng=np.random.default_rng(3), raised_budget_share=1.0,
                              step_s=env.step_s, grace_s=env.params.budget_grace_s)
    assert np.array_equal(kept.obs, two)
    with pytest.raises(ValueError, match="step"):
        cheapest_labels(d, env.costs, names, "min-energy", raised_budget_share=0.5)


def test_borrowed_states_keep_the_goal_the_mask_and_the_label():
    """--bc-borrowed-states: a share of the min-energy steps reads every state feature of another step (any
    objective) and keeps its own objective block, floor, budget, allowance and deadline, its mask and its label;
    the other steps and the input are untouched; reproducible from the rng."""
    from agents.imitation import GOAL_FEATURES, cheapest_labels
    from envs.power_env import MicroLLMPowerEnv

    env = MicroLLMPowerEnv(profile="profiles/reference-cpu.json")
    costs, n = env.costs, env.action_space.n
    names = ["obj_max_quality", "obj_min_energy", "quality_floor", "budget_w", "budget_left_frac", "soc", "temp_c",
             "plugged"]
    rng = np.random.default_rng(5)
    obs = rng.random((400, len(names))).astype(np.float32)
    obs[:, 0], obs[:, 1] = np.r_[np.zeros(300), np.ones(100)], np.r_[np.ones(300), np.zeros(100)]
    obs[:, 5] = np.arange(400)  # the SoC column tells the rows apart
    masks = rng.random((400, n)) < 0.5
    masks[:, 0] = True
    d = Demonstrations(obs, masks, np.zeros(400, np.int64), np.zeros(400), [400])
    before = obs.copy()
    plain, _ = cheapest_labels(d, costs, names, "mix", rng=np.random.default_rng(7))
    out, _ = cheapest_labels(d, costs, names, "mix", rng=np.random.default_rng(7), borrowed_share=0.5)
    moved = np.flatnonzero(out.obs[:, 5] != d.obs[:, 5])
    assert 100 < moved.size < 200 and moved.max() < 300  # about half of the min-energy steps, no other
    assert np.array_equal(out.labels, plain.labels) and out.masks is d.masks  # the mask and the label stay
    goal = [i for i, c in enumerate(names) if c in GOAL_FEATURES or c.startswith("obj_")]
    state = [i for i in range(len(names)) if i not in goal]
    assert np.array_equal(out.obs[:, goal], d.obs[:, goal])
    donors = out.obs[moved, 5].astype(int)  # each moved row holds the whole state of the row it borrowed from
    assert np.array_equal(out.obs[np.ix_(moved, state)], before[np.ix_(donors, state)])
    assert (donors >= 300).any()  # donors come from every objective's steps
    assert np.array_equal(d.obs, before)  # the input is not written
    again, _ = cheapest_labels(d, costs, names, "mix", rng=np.random.default_rng(7), borrowed_share=0.5)
    assert np.array_equal(again.obs, out.obs)
