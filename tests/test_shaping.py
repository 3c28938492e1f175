"""agents.shaping: the energy-deficit potential (train.py --shape-energy)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecMonitor

from agents.shaping import LAMBDAS, EnergyShaping, dual_prefix_sums, quality_per_joule
from envs.batched import BatchedPowerEnv
from runtime.dynamics import TOK_SCALE, EnvParams


def test_quality_per_joule_is_the_cheapest_exchange_from_the_full_configuration():
    q = np.array([0.5, 0.4, 0.45, 0.6])
    e = np.array([1.0, 0.5, 0.8, 2.0])  # the last one spends more: never a saving
    # (0.5 - 0.4) / (0.5 * 100 * 10) = 2e-4; (0.5 - 0.45) / (0.2 * 100 * 10) = 2.5e-4
    assert quality_per_joule(q, e, full=0, dt=10.0) == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="nothing to price"):
        quality_per_joule(q, e, full=1, dt=10.0)  # nothing spends less than the cheapest


def _low_battery(env: BatchedPowerEnv, j: int, soc: float = 0.2, capacity_scale: float = 0.05,
                 config: int | None = None) -> None:
    """Env ``j`` at the first busy row of trace 0 (demand above 10 tok/s) with a small, low battery."""
    start = int(np.argmax(env.tr.demand[0, :env.tr.n[0]] > 10.0))
    env.reset_env(j, 0, start, soc=soc, config=config)
    env.plant.capacity_j[j] *= capacity_scale


def test_a_cheaper_step_in_a_deficit_earns_the_price_of_the_energy_it_saved():
    env = BatchedPowerEnv(n_envs=2, seed=0)
    sh = EnergyShaping(env, scale=3.0, gamma=0.99)
    sh.reset()
    full = env.ref.full_config
    cheap = int(np.argmin(env.costs.ept_j))
    for j, cfg in ((0, full), (1, cheap)):  # the same low-battery state twice, each already running its action
        _low_battery(env, j, config=cfg)
    sh._phi = sh.potential()
    assert (sh.deficit_j() > 0).all()
    soc0, cap = env.soc.copy(), env.plant.capacity_j.copy()
    _, shaped, done, _ = sh.step(np.array([full, cheap]))
    raw = env.last.reward
    assert not done.any() and (sh.deficit_j() > 0).all()
    bonus = shaped - raw
    stored_drop_j = (soc0 - env.soc) * cap  # discharge at 100 %: what each step took from the battery
    assert stored_drop_j[0] > stored_drop_j[1] > 0
    saved_j = stored_drop_j[0] - stored_drop_j[1]
    assert bonus[1] - bonus[0] == pytest.approx(0.99 * sh.price_per_j * saved_j, rel=1e-4)
    assert sh.price_per_j == pytest.approx(3.0 * sh.kappa)


def test_no_deficit_no_shaping():
    """A full battery that can run the full model to the end: the shaped reward is the env's, step for step."""
    a, b = BatchedPowerEnv(n_envs=4, seed=3), BatchedPowerEnv(n_envs=4, seed=3)
    sh = EnergyShaping(b, scale=5.0, gamma=0.99)
    a.reset(), sh.reset()
    for j in range(4):
        for env in (a, b):
            env.reset_env(j, j % len(env.tr.n), 0, soc=1.0)
            env.plant.capacity_j[j] *= 100.0
    sh._phi = sh.potential()
    assert not sh.deficit_j().any()
    for _ in range(20):
        act = np.full(4, a.ref.full_config)
        _, r_a, _, _ = a.step(act)
        _, r_b, _, _ = sh.step(act)
        np.testing.assert_array_equal(r_a, r_b)


@pytest.mark.parametrize("potential", ["deficit", "dual"])
def test_the_shaping_telescopes_over_an_episode_and_the_monitor_keeps_the_env_return(potential):
    """With gamma 1 the shaped return is the env's return minus Phi(s0) (Phi of the end is 0: policy-invariant),
    and VecMonitor underneath logs the env's own return."""
    env = BatchedPowerEnv(n_envs=1, seed=1, params=EnvParams(max_episode_steps=40))
    sh = EnergyShaping(VecMonitor(env), scale=4.0, gamma=1.0, potential=potential)
    sh.reset()
    _low_battery(env, 0)
    phi0 = float(sh.potential()[0])
    sh._phi = np.array([phi0])
    assert phi0 < 0
    rng = np.random.default_rng(0)
    shaped_sum, raw_sum, info = 0.0, 0.0, None
    for _ in range(40):
        _, r, done, infos = sh.step(rng.integers(len(env.costs), size=1))
        shaped_sum += float(r[0])
        raw_sum += float(env.last.reward[0])
        if done[0]:
            info = infos[0]
            break
    assert info is not None, "the episode should end within max_episode_steps"
    assert shaped_sum == pytest.approx(raw_sum - phi0, rel=1e-4, abs=1e-4)
    assert info["episode"]["r"] == pytest.approx(raw_sum, rel=1e-4, abs=1e-4)


def test_dual_prefix_sums_are_the_per_row_dual_terms():
    env = BatchedPowerEnv(n_envs=1, seed=0)
    off, H = dual_prefix_sums(env)
    tr, c, dt = env.tr, env.costs, env.dt
    assert H.shape == (int((tr.n + 1).sum()), len(LAMBDAS)) and not H[:, 0].any()  # lambda 0: no cost at all
    k, i, li = 1, 5, 7
    d = tr.demand[k, i]
    served = np.minimum(d, c.tps)
    r, e = c.quality * served / TOK_SCALE, served * dt * c.ept_j
    lam = LAMBDAS[li]
    h = (r - lam * e).max() - r.max() - lam * (tr.idle[k] + tr.base[k, i] - tr.supply[k, i]) * dt
    assert H[off[k] + i + 1, li] - H[off[k] + i, li] == pytest.approx(h, rel=1e-4, abs=1e-5)


def test_the_dual_potential_prices_a_joule_only_where_the_battery_is_short():
    env = BatchedPowerEnv(n_envs=2, seed=0)
    sh = EnergyShaping(env, scale=1.0, gamma=0.99, potential="dual")
    sh.reset()
    full, cheap = env.ref.full_config, int(np.argmin(env.costs.ept_j))
    env.reset_env(0, 0, 0, soc=1.0)
    env.plant.capacity_j[0] *= 100.0  # plenty: every row can run its best configuration
    _low_battery(env, 1)
    value, price = sh.dual_value()
    assert value[0] == 0.0 and price[0] == 0.0
    assert value[1] < 0.0 and price[1] > 0.0
    for j, cfg in ((0, full), (1, cheap)):  # from the same short state: the cheap step is shaped up, the full one not
        _low_battery(env, j, config=cfg)
    sh._phi = sh.potential()
    _, shaped, _, _ = sh.step(np.array([full, cheap]))
    bonus = shaped - env.last.reward
    assert bonus[1] > bonus[0]


def test_bad_arguments_are_refused():
    env = BatchedPowerEnv(n_envs=1, seed=0)
    with pytest.raises(ValueError, match="> 0"):
        EnergyShaping(env, scale=0.0, gamma=0.99)
    with pytest.raises(ValueError, match="gamma"):
        EnergyShaping(env, scale=1.0, gamma=1.5)
    with pytest.raises(ValueError, match="deficit, dual"):
        EnergyShaping(env, scale=1.0, gamma=0.99, potential="nope")
    with pytest.raises(TypeError, match="BatchedPowerEnv"):
        EnergyShaping(VecMonitor(_dummy()), scale=1.0, gamma=0.99)


def _dummy():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: gym.make("CartPole-v1")])


def test_train_records_the_shaping_and_logs_it(tmp_path):
    import train
    from model.profile_schema import example_profile, save_profile

    prof = save_profile(example_profile(12), tmp_path / "p.json")
    run = train.main(train.Args(profile=str(prof), total_timesteps=512, n_envs=4, runs_dir=str(tmp_path / "runs"),
                                bc_expert="none",
                                final_eval=False, progress=False, eval_freq=256, eval_episodes=2,
                                low_soc_frac=1.0, env=EnvParams(max_episode_steps=24), shape_energy=2.0,
                                shape_potential="dual"))
    args = json.loads((run / "config.json").read_text())["args"]
    assert args["shape_energy"] == 2.0 and args["shape_potential"] == "dual"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(next((run / "tb").iterdir())))
    tb.Reload()
    assert "charts/shaping_abs_mean" in tb.Tags()["scalars"]


def test_the_training_death_weight_prices_a_death_and_nothing_else():
    """``DeathWeight``: a death's step costs ``W - weights.death`` more; the other env (same steps, a battery that
    lasts, cut by the step limit) is untouched; VecMonitor underneath logs the env's own return."""
    from agents.shaping import DeathWeight

    p = EnvParams(max_episode_steps=30)
    env = BatchedPowerEnv(n_envs=2, seed=1, params=p)
    dw = DeathWeight(VecMonitor(env), 200.0, p.weights.death)
    dw.reset()
    _low_battery(env, 0, soc=0.02, capacity_scale=0.01)  # dies within a few steps at the full configuration
    _low_battery(env, 1, soc=1.0, capacity_scale=100.0)  # lasts until the step limit
    raw, seen = np.zeros(2), {}
    for _ in range(30):
        _, r, done, infos = dw.step(np.full(2, env.ref.full_config))
        raw_r = env.last.reward.copy()
        for j in range(2):
            if j in seen:
                continue
            if done[j]:
                dead = not infos[j]["TimeLimit.truncated"]
                assert r[j] == pytest.approx(raw_r[j] - (150.0 if dead else 0.0), abs=1e-4)
                seen[j] = (dead, infos[j]["episode"]["r"], raw[j] + raw_r[j])
            else:
                assert r[j] == pytest.approx(raw_r[j], abs=1e-5)
                raw[j] += raw_r[j]
        if len(seen) == 2:
            break
    assert seen[0][0] and not seen[1][0], "env 0 should die, env 1 reach the step limit"
    for _, logged, env_return in seen.values():
        assert logged == pytest.approx(env_return, rel=1e-4, abs=1e-3)
    with pytest.raises(ValueError, match="death weight"):
        DeathWeight(env, 10.0, 50.0)
