"""A batched form of ``MicroLLMPowerEnv``: N environments stepped at once in numpy, exposed as a
stable-baselines3 ``VecEnv`` (so PPO can train on it directly).

The maths is the scalar environment's, written with arrays; ``tests/test_batched_env.py``
pins every output (observations, rewards, terminations, SoC, temperature) to
``MicroLLMPowerEnv`` on the same traces, starts and actions. Differences from the scalar env:
episodes start at a uniformly random row of a uniformly random trace (``random_start``
semantics), the 720-step time limit is applied here (``max_episode_steps``) since there is no
``TimeLimit`` wrapper, and ``infos`` carry only ``terminal_observation``, ``TimeLimit.truncated``
and ``action_mask`` (per-step terms are in the ``last_*`` arrays, to keep the step fast).
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from envs.power_env import TOK_SCALE, MicroLLMPowerEnv, RewardWeights
from runtime.observation import FEATURES, N_BASE


class BatchedPowerEnv(VecEnv):
    def __init__(self, n_envs: int = 64, profile=None, traces=None, split: str = "train",
                 step_s: float = 10.0, slo_ms: float = 500.0, backlog_cap_tokens: float = 5000.0,
                 reserve_soc: float = 0.05, budget_grace_s: float = 300.0,
                 weights: RewardWeights = RewardWeights(), max_episode_steps: int = 720, seed: int = 0,
                 mask_actions: bool = False, ref: MicroLLMPowerEnv | None = None):
        # one scalar env supplies the parsed profile and traces (a single source of both);
        # pass ``ref`` to reuse an existing env's (the other arguments are then taken from it)
        self.ref = ref.unwrapped if ref is not None else MicroLLMPowerEnv(
            profile=profile, traces=traces, split=split, step_s=step_s, slo_ms=slo_ms,
            backlog_cap_tokens=backlog_cap_tokens, reserve_soc=reserve_soc, budget_grace_s=budget_grace_s,
            weights=weights)
        if ref is not None:
            r = self.ref
            step_s, slo_ms, backlog_cap_tokens = r.step_s, r.slo_ms, r.backlog_cap
            reserve_soc, budget_grace_s, weights = r.reserve_soc, r.budget_grace_s, r.w
        self.render_mode = None
        super().__init__(n_envs, self.ref.observation_space, self.ref.action_space)
        c, trs = self.ref.costs, self.ref.traces
        self.tps, self.ept, self.dec, self.q = c.tps, c.ept_j, c.decode_ms, c.quality
        self.feat, self.sw_s, self.sw_j = c.features, c.switch_s, c.switch_j
        L = max(t.n for t in trs)

        def pad(attr):
            out = np.full((len(trs), L), np.nan)
            for k, t in enumerate(trs):
                out[k, :t.n] = getattr(t, attr)
            return out

        self.T_supply, self.T_plug, self.T_amb = pad("supply_w"), pad("plugged"), pad("ambient_c")
        self.T_dem, self.T_bw, self.T_bud, self.T_base = (pad("demand_tps"), pad("bandwidth_mbps"),
                                                          pad("budget_w"), pad("base_w"))
        self.tr_n = np.array([t.n for t in trs])
        self.tr_cap = np.array([t.capacity_j for t in trs])
        self.tr_soc0 = np.array([t.initial_soc for t in trs])
        self.tr_dl = np.array([t.deadline_s for t in trs])
        d = [t.device for t in trs]
        self.tr_rth = np.array([x.r_th_c_per_w for x in d])
        self.tr_tau = np.array([x.tau_s for x in d])
        self.tr_tmax = np.array([x.t_max_c for x in d])
        self.tr_k = np.array([x.throttle_per_c for x in d])
        self.tr_tmin = np.array([x.throttle_min for x in d])
        self.tr_eta = np.array([x.charge_efficiency for x in d])
        self.tr_idle = np.array([x.idle_power_w for x in d])
        self.dt, self.slo, self.cap_b = float(step_s), float(slo_ms), float(backlog_cap_tokens)
        self.grace, self.w, self.max_steps = float(budget_grace_s), weights, int(max_episode_steps)
        self.mask_actions = mask_actions
        self.rng = np.random.default_rng(seed)
        n = n_envs
        self.k = np.zeros(n, int)
        self.i = np.zeros(n, int)
        self.i0 = np.zeros(n, int)
        self.soc, self.temp, self.backlog = np.zeros(n), np.zeros(n), np.zeros(n)
        self.a = np.full(n, self.ref._full)
        self.budget_left = np.zeros(n)
        self.last_p, self.last_lat, self.last_dem = np.zeros(n), np.zeros(n), np.zeros(n)
        self.t = np.zeros(n, int)
        self._actions = None
        self.lo = np.array([f[2] for f in FEATURES])
        self.hi = np.array([f[3] for f in FEATURES])

    # ---- resets ------------------------------------------------------------------------------
    def reset_env(self, j: int, trace: int, start: int, soc: float | None = None,
                  temp_c: float | None = None, config: int | None = None) -> None:
        self.k[j], self.i[j], self.i0[j] = trace, start, start
        self.soc[j] = self.tr_soc0[trace] if soc is None else soc
        amb, base, idle = self.T_amb[trace, start], self.T_base[trace, start], self.tr_idle[trace]
        self.temp[j] = amb + self.tr_rth[trace] * (idle + base) if temp_c is None else temp_c
        self.backlog[j], self.budget_left[j], self.t[j] = 0.0, 0.0, 0
        self.a[j] = self.ref._full if config is None else config
        self.last_p[j], self.last_lat[j], self.last_dem[j] = idle + base, 0.0, self.T_dem[trace, start]

    def _random_reset(self, j: int) -> None:
        k = int(self.rng.integers(len(self.tr_n)))
        self.reset_env(j, k, int(self.rng.integers(0, max(1, self.tr_n[k] - 1))))

    def reset(self):
        for j in range(self.num_envs):
            self._random_reset(j)
        return self._obs()

    # ---- dynamics (vectorised MicroLLMPowerEnv.step) -----------------------------------------
    def _step(self, a: np.ndarray):
        k, i, dt, w = self.k, self.i, self.dt, self.w
        temp, tmax = self.temp, self.tr_tmax[k]
        theta = np.where(temp <= tmax, 1.0, np.maximum(self.tr_tmin[k], 1.0 - self.tr_k[k] * (temp - tmax)))
        sw_s, sw_j = self.sw_s[self.a, a], self.sw_j[self.a, a]
        rate = self.tps[a] * theta
        demand = self.T_dem[k, i]
        requested = self.backlog + demand * dt
        served = np.minimum(requested, rate * np.maximum(dt - sw_s, 0.0))
        left = requested - served
        dropped = np.where(left > self.cap_b, left - self.cap_b, 0.0)
        self.backlog = left - dropped
        energy = served * self.ept[a] + sw_j + (self.tr_idle[k] + self.T_base[k, i]) * dt
        power = energy / dt
        net = self.T_supply[k, i] - power
        soc = self.soc + np.where(net > 0, net * self.tr_eta[k], net) * dt / self.tr_cap[k]
        soc = np.minimum(soc, 1.0)
        dead = soc <= 0.0
        self.soc = np.where(dead, 0.0, soc)
        t_inf = self.T_amb[k, i] + self.tr_rth[k] * power
        self.temp = temp = t_inf + (temp - t_inf) * np.exp(-dt / self.tr_tau[k])
        lat = self.dec[a] / theta + 1000.0 * self.backlog / rate
        over_c = np.maximum(temp - tmax, 0.0)
        slo_bad = lat > self.slo
        bud = self.T_bud[k, i]
        has_b = bud == bud
        llm_j = energy - (self.tr_idle[k] + self.T_base[k, i]) * dt
        bud0 = np.nan_to_num(bud)
        self.budget_left = np.where(has_b, self.budget_left + bud0 * dt - llm_j, self.budget_left)
        over_b = np.where(has_b & (self.budget_left + bud0 * self.grace < 0) & (llm_j > bud0 * dt),
                          (llm_j / dt - bud0) / np.where(has_b, bud, 1.0), 0.0)
        terms = {"quality": self.q[a] * served / (TOK_SCALE * dt), "thermal": -w.thermal_per_c * over_c,
                 "slo": -w.slo * slo_bad, "budget": -w.budget * over_b,
                 "drop": -w.drop * dropped / (TOK_SCALE * dt), "death": -w.death * dead}
        reward = sum(terms.values())
        self.last_terms = terms
        self.last_cost = (over_c > 0).astype(float) + slo_bad + (over_b > 0) + dead
        self.last_energy_j, self.last_served = energy, served
        self.a, self.last_p, self.last_lat, self.last_dem = a.copy(), power, lat, demand
        self.i = i + 1
        self.t += 1
        trunc_trace = self.i >= self.tr_n[k]
        self.i = np.minimum(self.i, self.tr_n[k] - 1)
        return reward, dead, trunc_trace & ~dead

    def _obs(self) -> np.ndarray:
        k, i, n = self.k, self.i, self.num_envs
        tmax, bud = self.tr_tmax[k], self.T_bud[k, i]
        has_b = (bud == bud) & (bud > 0)
        dl = self.tr_dl[k]
        has_d = dl == dl
        t_s = i * self.dt
        left_s = np.maximum(np.where(has_d, dl - t_s, (self.tr_n[k] - i) * self.dt), 1.0)
        bud0 = np.nan_to_num(bud)
        obs = np.empty((n, N_BASE))
        obs[:, 0], obs[:, 1], obs[:, 2] = self.soc, self.T_supply[k, i], self.T_plug[k, i]
        obs[:, 3], obs[:, 4] = self.temp, tmax - self.temp
        obs[:, 5] = has_b
        obs[:, 6] = np.where(has_b, (self.budget_left + bud0 * self.grace) / np.where(has_b, bud0, 1.0) / 3600.0, 1.0)
        obs[:, 7] = has_d
        obs[:, 8] = np.where(has_d, np.maximum(np.nan_to_num(dl) - t_s, 0.0) / 3600.0, 0.0)
        obs[:, 9] = self.soc * self.tr_cap[k] / left_s
        obs[:, 10], obs[:, 11] = self.last_dem, self.backlog / self.cap_b
        obs[:, 12], obs[:, 13] = self.last_lat / self.slo, self.T_bw[k, i]
        obs[:, 14:17] = self.feat[self.a]
        obs[:, 17], obs[:, 18] = self.last_p, self.T_amb[k, i]
        return np.clip(obs, self.lo, self.hi).astype(np.float32)

    # ---- VecEnv API ---------------------------------------------------------------------------
    def step_async(self, actions) -> None:
        self._actions = np.asarray(actions, dtype=int).reshape(self.num_envs)

    def step_wait(self):
        reward, term, trunc = self._step(self._actions)
        trunc = trunc | (self.t >= self.max_steps)
        done = term | trunc
        obs = self._obs()
        infos = [{} for _ in range(self.num_envs)]
        for j in np.flatnonzero(done):
            infos[j]["terminal_observation"] = obs[j].copy()
            infos[j]["TimeLimit.truncated"] = bool(trunc[j] and not term[j])
            self._random_reset(int(j))
        if done.any():
            obs = self._obs()
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._idx(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        if method_name == "action_masks":
            return list(self.action_masks())
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._idx(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._idx(indices))

    def _idx(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices

    def action_masks(self) -> np.ndarray:
        """(n_envs, n_actions) feasibility masks (``runtime.rules``), for MaskablePPO."""
        from runtime.rules import feasible_mask

        out = np.ones((self.num_envs, self.action_space.n), dtype=bool)
        hot = self.temp > self.tr_tmax[self.k] - 1.0
        low = self.soc < self.ref.reserve_soc
        for j in np.flatnonzero(hot | low):
            k, i = self.k[j], self.i[j]
            feasible_mask(self.ept, self.last_dem[j], self.temp[j], self.T_amb[k, i], self.tr_tmax[k],
                          self.tr_rth[k], self.T_base[k, i] + self.tr_idle[k], self.soc[j],
                          self.ref.reserve_soc, self.T_supply[k, i], self.ref._cheap, out=out[j])
        return out

    @property
    def observation_dim(self) -> int:
        return self.observation_space.shape[0]


__all__ = ["BatchedPowerEnv", "spaces"]
