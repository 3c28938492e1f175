"""The batched numpy env is pinned to the scalar MicroLLMPowerEnv (one set of maths, two forms)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.batched import BatchedPowerEnv
from envs.power_env import MicroLLMPowerEnv
from model.profile_schema import example_profile

PROFILE = example_profile(12)


@pytest.mark.parametrize("trace_index,lookahead,thermal,cap,avg_s,hint,pcap,psup",
                         [(k, 0, False, 0.0, 0.0, False, 0.0, False) for k in range(6)]
                         + [(1, 3, False, 0.0, 0.0, False, 0.0, False), (4, 2, False, 0.0, 0.0, False, 0.0, False),
                            (4, 0, True, 0.0, 0.0, False, 0.0, False), (2, 1, True, 0.0, 0.0, False, 0.0, False),
                            (4, 0, True, 2.0, 0.0, False, 0.0, False), (0, 1, True, 2.0, 60.0, False, 0.0, False),
                            (4, 0, True, 2.0, 60.0, True, 0.0, False), (1, 0, False, 0.0, 0.0, True, 0.0, False),
                            (3, 0, True, 2.0, 60.0, True, 4.0, False), (5, 1, False, 0.0, 0.0, False, 2.0, False),
                            (3, 0, True, 2.0, 60.0, True, 4.0, True), (2, 1, False, 0.0, 0.0, False, 2.0, True)])
def test_batched_matches_scalar(trace_index, lookahead, thermal, cap, avg_s, hint, pcap, psup):
    kw = dict(lookahead=lookahead, thermal_obs=thermal, thermal_cap=cap, demand_avg_s=avg_s, rule_hint=hint,
              power_cap=pcap, power_supply=psup)
    scalar = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, max_episode_steps=10_000,
                              **kw)  # the same horizon_s
    batched = BatchedPowerEnv(n_envs=3, profile=PROFILE, split="train", max_episode_steps=10_000, **kw)
    n_hint = sum(len(k.values) for k in batched.ref.space.knobs) if hint else 0
    assert batched.observation_space.shape == (19 + 2 * thermal + (avg_s > 0) + 2 * (pcap > 0) + psup + n_hint
                                          + lookahead,) \
        == batched._obs()[0].shape
    k = trace_index * 3 % len(scalar.traces)
    rng = np.random.default_rng(trace_index)
    start = int(rng.integers(0, scalar.traces[k].n // 2))
    obs_s, _ = scalar.reset(seed=0, options={"trace": k, "start": start})
    for j in range(3):
        batched.reset_env(j, k, start)
    np.testing.assert_allclose(batched._obs()[0], obs_s, rtol=1e-6, atol=1e-5)
    for _ in range(300):
        a = int(rng.integers(scalar.action_space.n))
        obs_s, r_s, term_s, trunc_s, info = scalar.step(a)
        r_b, term_b, trunc_b = batched._step(np.full(3, a))
        np.testing.assert_allclose(batched._obs()[1], obs_s, rtol=1e-6, atol=1e-5)
        if hint:
            assert batched.hint_config[1] == scalar.hint_config
        assert r_b[2] == pytest.approx(r_s, rel=1e-12, abs=1e-12)  # the same step_core on floats and arrays
        assert batched.soc[0] == pytest.approx(info["step"].soc, abs=1e-12)
        assert batched.temp[0] == pytest.approx(info["step"].temp_c, abs=1e-9)
        assert bool(term_b[0]) == term_s and bool(trunc_b[0]) == trunc_s
        if term_s or trunc_s:
            break


def test_scalar_reset_options_match_the_batched_randomisation():
    """The scalar env's ``capacity_scale`` and ``ambient_shift_c`` reset options (demonstrations under
    ``train.py --demo-dr``) are the batched env's battery and weather draws: same observations, rewards and
    masks step for step on a heat-wave trace."""
    scalar = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, max_episode_steps=10_000,
                              thermal_obs=True, thermal_cap=2.0)
    batched = BatchedPowerEnv(n_envs=2, profile=PROFILE, split="train", max_episode_steps=10_000, thermal_obs=True,
                              thermal_cap=2.0)
    k = 4 * 3 % len(scalar.traces)
    obs_s, _ = scalar.reset(seed=0, options={"trace": k, "start": 5, "soc": 0.2, "capacity_scale": 0.6,
                                             "ambient_shift_c": 12.0})
    for j in range(2):
        batched.reset_env(j, k, 5, soc=0.2)
    batched.amb_off[0] = 12.0
    batched.temp[0] = batched._start_temp_c(0)
    batched.plant.capacity_j[0] *= 0.6
    np.testing.assert_allclose(batched._obs()[0], obs_s, rtol=1e-6, atol=1e-5)
    plain = MicroLLMPowerEnv(profile=PROFILE, split="train", random_start=False, thermal_obs=True, thermal_cap=2.0)
    plain.reset(seed=0, options={"trace": k, "start": 5, "soc": 0.2})
    assert scalar.temp_c == pytest.approx(plain.temp_c + 12.0)  # steady state at the shifted ambient
    rng = np.random.default_rng(1)
    masked = 0
    for _ in range(200):
        a = int(rng.integers(scalar.action_space.n))
        obs_s, r_s, term_s, trunc_s, _ = scalar.step(a)
        r_b, term_b, trunc_b = batched._step(np.full(2, a))
        np.testing.assert_allclose(batched._obs()[0], obs_s, rtol=1e-6, atol=1e-5)
        assert r_b[0] == pytest.approx(r_s, rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(batched.action_masks()[0], scalar.action_masks())
        masked += int(not scalar.action_masks().all())
        if term_s or trunc_s:
            break
    assert masked > 0  # the shifted heat wave reached the thermal (or reserve) rule


def test_batched_env_runs_under_sb3_vecenv_api():
    from stable_baselines3.common.vec_env import VecMonitor

    env = VecMonitor(BatchedPowerEnv(n_envs=4, profile=PROFILE, max_episode_steps=20))
    obs = env.reset()
    assert obs.shape == (4, env.observation_space.shape[0])
    episodes = 0
    for _ in range(45):
        obs, rew, done, infos = env.step(np.zeros(4, dtype=int))
        assert env.observation_space.contains(obs[0])
        episodes += sum("episode" in i for i in infos)
    assert episodes >= 4  # every env hit the 20-step limit at least once and was auto-reset
    assert env.venv.action_masks().shape == (4, env.action_space.n)


def test_speed_randomisation_slows_each_episode_by_its_drawn_factor():
    """BatchedPowerEnv(speed_sigma): a per-episode host factor s; the first step's latency is s times the
    profile's host's (same state, same action, no backlog yet); sigma 0 draws nothing."""
    import numpy as np

    from envs.batched import BatchedPowerEnv

    fast = BatchedPowerEnv(n_envs=8, seed=3)
    same = BatchedPowerEnv(n_envs=8, seed=3, speed_sigma=0.0)
    assert np.array_equal(fast.reset(), same.reset())  # 0: the batch's random sequence is untouched
    env = BatchedPowerEnv(n_envs=8, seed=3, speed_sigma=0.4)
    env.reset()
    s = env.speed.copy()
    assert np.all(s > 0) and np.ptp(s) > 0.1 and not np.allclose(s, 1.0)
    for j in range(8):  # the profile's host in the same states
        fast.reset_env(j, int(env.k[j]), int(env.i[j]))
    a = np.full(8, fast.ref.full_config)
    env.step(a)
    fast.step(a)
    ok = (fast.last.latency_ms > 0) & (env.last.backlog == 0) & (fast.last.backlog == 0)
    assert ok.sum() >= 3
    np.testing.assert_allclose(env.last.latency_ms[ok] / fast.last.latency_ms[ok], s[ok], rtol=1e-6)
    again = BatchedPowerEnv(n_envs=8, seed=3, speed_sigma=0.4)
    again.reset()
    assert np.array_equal(again.speed, s)  # seeded


def test_battery_randomisation_draws_low_charges_and_capacities():
    """BatchedPowerEnv(low_soc_frac, capacity_sigma): about that share of random episodes starts between the
    reserve and LOW_SOC_MAX; capacities are the trace's times a drawn factor; the first step drains a smaller
    battery by more; 0 draws nothing; bad values are refused."""
    import numpy as np

    from envs.batched import LOW_SOC_MAX, BatchedPowerEnv

    n = 400
    plain = BatchedPowerEnv(n_envs=n, seed=5)
    assert np.array_equal(plain.reset(), BatchedPowerEnv(n_envs=n, seed=5, low_soc_frac=0.0,
                                                         capacity_sigma=0.0).reset())
    cap0 = plain.plant.capacity_j.copy()
    env = BatchedPowerEnv(n_envs=n, seed=5, low_soc_frac=0.5, capacity_sigma=0.3)
    env.reset()
    trace_soc = env.tr.soc0[env.k]
    low = env.soc != trace_soc
    assert 0.4 < low.mean() < 0.6
    assert np.all((env.soc[low] >= env.params.reserve_soc) & (env.soc[low] <= LOW_SOC_MAX))
    trace_cap = np.array([env.tr.plant(int(k)).capacity_j for k in env.k])
    ratio = env.plant.capacity_j / trace_cap
    assert np.ptp(np.log(ratio)) > 0.5 and 0.2 < np.std(np.log(ratio)) < 0.4
    assert np.array_equal(cap0, np.array([plain.tr.plant(int(k)).capacity_j for k in plain.k]))
    # the same step drains the smaller battery by more: SoC drop ∝ 1 / capacity
    for j in range(n):
        plain.reset_env(j, int(env.k[j]), int(env.i[j]), soc=float(env.soc[j]))
    a = np.full(n, env.ref.full_config)
    s0 = env.soc.copy()
    env.step(a)
    plain.step(a)
    ok = (s0 - env.last.soc > 1e-9) & ~env.last.dead & (env.last.soc > 0) & (plain.last.soc > 0)
    assert ok.sum() >= 20
    np.testing.assert_allclose((s0 - env.last.soc)[ok] * ratio[ok], (s0 - plain.last.soc)[ok], rtol=1e-6)
    for bad in ({"low_soc_frac": 1.5}, {"capacity_sigma": -0.1}, {"low_soc_frac": float("nan")}):
        try:
            BatchedPowerEnv(n_envs=2, seed=0, **bad)
        except ValueError as e:
            assert next(iter(bad)) in str(e)
        else:
            raise AssertionError(f"{bad} accepted")


def test_hot_randomisation_shifts_ambient_everywhere_it_is_read():
    """BatchedPowerEnv(hot_frac): about that share of random episodes runs with its ambient raised by a drawn
    shift in [0, HOT_SHIFT_MAX_C]; the shifted episode starts hotter, heats more in a step, observes the shifted
    ambient, and is masked by the thermal rule where the same trace unshifted is not; explicit resets (evaluation,
    demonstrations) never shift; 0 draws nothing; bad values are refused."""
    import numpy as np

    from envs.batched import HOT_SHIFT_MAX_C, BatchedPowerEnv
    n = 400
    assert np.array_equal(BatchedPowerEnv(n_envs=n, seed=5).reset(),
                          BatchedPowerEnv(n_envs=n, seed=5, hot_frac=0.0).reset())
    env = BatchedPowerEnv(n_envs=n, seed=5, hot_frac=0.5)
    obs = env.reset()
    hot = env.amb_off > 0
    assert 0.4 < hot.mean() < 0.6 and env.amb_off.max() <= HOT_SHIFT_MAX_C
    plain = BatchedPowerEnv(n_envs=n, seed=5)
    plain.reset()
    for j in range(n):
        plain.reset_env(j, int(env.k[j]), int(env.i[j]))
    assert np.all(env.temp[hot] > plain.temp[hot]) and np.array_equal(env.temp[~hot], plain.temp[~hot])
    col = env.layout.index["ambient_c"]
    seen = obs[:, col] - plain._obs()[:, col]  # the observed ambient moves with the shift, and only there
    assert np.all(seen[hot] > 0) and np.array_equal(seen[~hot], np.zeros((~hot).sum()))
    assert np.corrcoef(seen[hot], env.amb_off[hot])[0, 1] > 0.99
    a = np.full(n, env.ref.full_config)
    env.step(a)
    plain.step(a)
    assert np.all(env.temp[hot] > plain.temp[hot])
    # the thermal rule: some shifted episodes are masked where their unshifted twin is not
    env.temp[:] = plain.temp[:] = env.plant.t_max_c - 0.5
    assert (env.action_masks().sum(1) < plain.action_masks().sum(1))[hot].any()
    assert np.array_equal(env.action_masks()[~hot], plain.action_masks()[~hot])
    env.reset_env(0, 0, 0)
    assert env.amb_off[0] == 0.0
    for bad in (1.5, -0.1, float("nan")):
        try:
            BatchedPowerEnv(n_envs=2, seed=0, hot_frac=bad)
        except ValueError as e:
            assert "hot_frac" in str(e)
        else:
            raise AssertionError(f"hot_frac {bad} accepted")


def test_hot_trip_places_hot_episodes_below_each_devices_trip_point():
    """--hot-trip: a hot episode's mean ambient lies U(2, 10) deg C below its device's trip point, for every kind;
    without it the blind shift is unchanged (the batch's random sequence too)."""
    from envs.batched import HOT_SHIFT_MAX_C, HOT_TRIP_MARGIN_C, draw_episode_randomisation

    b = BatchedPowerEnv(n_envs=64, profile=PROFILE, split="train", hot_frac=1.0, hot_trip=True, seed=3)
    b.reset()
    for _ in range(3):  # more episodes: end them all and draw again
        gaps = [b.plant.t_max_c[j] - (np.mean(b.ref.traces[b.k[j]].ambient_c) + b.amb_off[j]) for j in range(64)]
        kinds = {b.ref.traces[b.k[j]].device_kind for j in range(64) if b.amb_off[j] > 0}
        already_hot = [b.plant.t_max_c[j] - np.mean(b.ref.traces[b.k[j]].ambient_c) < HOT_TRIP_MARGIN_C[1]
                       for j in range(64)]
        for g, hot in zip(gaps, already_hot):
            assert HOT_TRIP_MARGIN_C[0] - 1e-9 <= g <= HOT_TRIP_MARGIN_C[1] + 1e-9 or hot
        assert len(kinds) >= 2
        for j in range(64):
            b._random_reset(j)
    blind = [draw_episode_randomisation(np.random.default_rng(s), 0.05, hot_frac=1.0)[2] for s in range(50)]
    assert 0 <= min(blind) and max(blind) <= HOT_SHIFT_MAX_C
    trip = [draw_episode_randomisation(np.random.default_rng(s), 0.05, hot_frac=1.0, trip_gap_c=30.0)[2]
            for s in range(50)]
    np.testing.assert_allclose(30.0 - np.array(trip), 30.0 - np.array(trip).clip(20.0, 28.0))  # gap - U(2, 10)


def test_action_masks_reuse_the_hints_masks_only_while_valid():
    """With the rule hint the observation computes the masks; action_masks reuses them for envs not stepped or
    reset since, and recomputes the rest: always what the masks of the current states are."""
    b = BatchedPowerEnv(n_envs=16, profile=PROFILE, split="train", seed=1, hot_frac=0.5, rule_hint=True,
                        thermal_obs=True, thermal_cap=2.0)
    b.reset()
    rng = np.random.default_rng(0)
    masked = 0
    for t in range(200):
        np.testing.assert_array_equal(b.action_masks(), b._masks())
        masked += int((~b._masks()).any())
        if t % 50 == 7:  # an explicit reset after the observation: that env's masks are stale
            b.reset_env(3, 0, 0, soc=0.01)
            np.testing.assert_array_equal(b.action_masks(), b._masks())
        b.step(rng.integers(0, b.action_space.n, 16))
    assert masked > 20


def test_vecenv_seed_restarts_the_batch_generator():
    """VecEnv.seed(s), as SB3's set_random_seed calls it through the wrappers, gives the episodes of
    BatchedPowerEnv(seed=s); another seed gives others; None draws one."""
    import numpy as np
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.batched import BatchedPowerEnv

    want = BatchedPowerEnv(n_envs=16, seed=7, low_soc_frac=0.5).reset()
    env = BatchedPowerEnv(n_envs=16, seed=0, low_soc_frac=0.5)
    assert not np.array_equal(env.reset(), want)
    seeds = VecMonitor(env).seed(7)
    assert seeds == list(range(7, 7 + 16))
    assert np.array_equal(env.reset(), want)
    assert not np.array_equal(env.reset(), want)  # the generator moved on
    assert len(env.seed()) == 16  # None: a drawn seed


def test_training_seed_leaves_the_batch_sequence_unchanged():
    """train.py builds the batch with seed=args.seed and SB3's algorithm seeds it again with args.seed before any
    draw: the episodes stay those of the constructor's seed."""
    import numpy as np
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.batched import BatchedPowerEnv

    venv = BatchedPowerEnv(n_envs=4, seed=11)
    MaskablePPO("MlpPolicy", VecMonitor(venv), n_steps=8, batch_size=8, seed=11, device="cpu")
    assert venv.rng.bit_generator.state == np.random.default_rng(11).bit_generator.state
