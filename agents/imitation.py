"""Warm start by imitation: behaviour cloning (+ DAgger rounds) from any controller, then RL.

PPO from a random initialisation spends most of its budget rediscovering what a good rule
already knows, and on the real traces it settled below the best heuristics (README, issue 6).
Kickstarting is the standard remedy: fit the actor to an expert's actions and the critic to the
returns of the expert's rollouts, then let PPO improve on it with the env's own reward.

The expert can be any registered controller (``agents.registry``). The **oracle** is the natural
teacher: it is the upper bound, and it can label *any* state because it acts from the true env
state with a value function over the whole (SoC, temperature, backlog) grid. It knows the
future, so the student learns ``E[oracle action | observation]``, the best it can do without
that knowledge; RL fine-tuning then optimises the actual return.

Data: ``collect`` runs episodes of the scalar env (train split, random trace and start, same as
training) in which a *driver* acts — the expert itself (behaviour cloning), or the student with
probability ``1 − beta`` (DAgger: the expert labels the states the student visits, so the
student learns to recover from its own mistakes) — and records the observation, the action mask,
the expert's label and the reward.

Fitting (``pretrain``): masked cross-entropy of the policy on the labels plus
``vf_coef`` × MSE of the value head on the discounted reward-to-go, both in the training
``VecNormalize``'s units (observations normalised with statistics fitted to the collected data,
returns divided by the same return scale VecNormalize uses for rewards).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.running_mean_std import RunningMeanStd
from tqdm import tqdm

from agents.base import held_to_masks
from agents.registry import make_controller
from runtime.rules import Feasibility, step_down


@dataclass
class Demonstrations:
    """Transitions from ``collect``: arrays of equal length N (episodes concatenated)."""

    obs: np.ndarray  # (N, obs_dim) raw observations
    masks: np.ndarray  # (N, n_actions) bool action masks
    labels: np.ndarray  # (N,) the expert's action
    rewards: np.ndarray  # (N,) reward of the driver's action
    episode_ends: list[int] = field(default_factory=list)  # index one past each episode's last step
    expert_return: float = 0.0  # mean return of episodes the expert drove alone (beta = 1), else nan
    seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.labels.size)

    def extend(self, other: Demonstrations) -> Demonstrations:
        off = len(self)
        return Demonstrations(
            np.concatenate([self.obs, other.obs]), np.concatenate([self.masks, other.masks]),
            np.concatenate([self.labels, other.labels]), np.concatenate([self.rewards, other.rewards]),
            self.episode_ends + [off + e for e in other.episode_ends], self.expert_return,
            self.seconds + other.seconds)

    def head(self, n: int) -> Demonstrations:
        """The first ``n`` transitions (whole episodes: ``n`` is an episode end), e.g. the first round's of a set
        that DAgger rounds extended."""
        return Demonstrations(self.obs[:n], self.masks[:n], self.labels[:n], self.rewards[:n],
                              [e for e in self.episode_ends if e <= n], self.expert_return)

    def save(self, path, expert: str) -> None:
        """Plain arrays (``np.load(..., allow_pickle=False)`` reads them back), written atomically."""
        from runtime.safeio import atomic_writer

        with atomic_writer(path, "wb") as fh:
            np.savez_compressed(fh, obs=self.obs, masks=self.masks, labels=self.labels, rewards=self.rewards,
                                episode_ends=np.asarray(self.episode_ends, np.int64),
                                expert_return=np.float64(self.expert_return), seconds=np.float64(self.seconds),
                                expert=np.str_(expert))

    @classmethod
    def load(cls, path, expert: str | None = None, obs_dim: int | None = None,
             n_actions: int | None = None) -> Demonstrations:
        """Reads ``save``'s file; checks it matches the expert and the env's shapes when given."""
        import zipfile

        keys = ("obs", "masks", "labels", "rewards", "episode_ends", "expert_return", "seconds", "expert")
        try:
            z = np.load(path, allow_pickle=False)
            if not hasattr(z, "files"):  # a bare array (.npy)
                raise ValueError("an array, not an archive")
        except OSError as exc:
            raise ValueError(f"{path}: cannot read it ({exc}); fix: pass a <run>/warm_start/demos.npz "
                             "written by an earlier --bc-expert run") from None
        except (ValueError, zipfile.BadZipFile, EOFError):  # not an archive (never unpickled: allow_pickle=False)
            raise ValueError(f"{path}: cannot read it as an .npz archive; fix: pass a <run>/warm_start/demos.npz "
                             "written by an earlier --bc-expert run") from None
        try:
            with z:
                missing = [k for k in keys if k not in z.files]
                if missing:
                    raise ValueError(f"{path}: not a demonstrations file (no {', '.join(missing)}); fix: pass a "
                                     "<run>/warm_start/demos.npz written by an earlier --bc-expert run")
                d = cls(z["obs"], z["masks"], z["labels"], z["rewards"], z["episode_ends"].tolist(),
                        float(z["expert_return"]), float(z["seconds"]))
                saved_expert = str(z["expert"])
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: cannot read it as an .npz ({exc}); fix: pass a <run>/warm_start/demos.npz "
                             "written by an earlier --bc-expert run") from None
        if expert is not None and saved_expert != expert:
            raise ValueError(f"{path}: demonstrations of {saved_expert!r}, not {expert!r}; fix: pass "
                             f"--bc-expert {saved_expert} or collect new ones (omit --bc-demos)")
        if obs_dim is not None and d.obs.shape[1] != obs_dim or n_actions is not None and d.masks.shape[1] != n_actions:
            raise ValueError(f"{path}: observations {d.obs.shape[1]}-d / {d.masks.shape[1]} actions, but the env has "
                             f"{obs_dim}-d / {n_actions}; fix: collect demonstrations for this profile and env")
        return d

    def returns_to_go(self, gamma: float) -> np.ndarray:
        """Discounted reward-to-go within each episode (truncated at the episode's end)."""
        return self._discounted(gamma, backward=True)

    def running_returns(self, gamma: float) -> np.ndarray:
        """VecNormalize's reward-scale statistic: ``R_t = γ·R_{t−1} + r_t`` from each episode start."""
        return self._discounted(gamma, backward=False)

    def _discounted(self, gamma: float, backward: bool) -> np.ndarray:
        """``g ← r_i + γ·g`` over each episode's steps, last-to-first or first-to-last."""
        out = np.empty_like(self.rewards, dtype=np.float64)
        start = 0
        for end in self.episode_ends:
            g = 0.0
            for i in (range(end - 1, start - 1, -1) if backward else range(start, end)):
                g = self.rewards[i] + gamma * g
                out[i] = g
            start = end
        return out


def collect(env, expert_name: str, episodes: int, *, seed: int, student=None, beta: float = 1.0,
            max_steps: int = 720, progress: bool = True, desc: str = "demos", workers: int = 1,
            expert_kwargs: dict | None = None, randomise: DemoRandomisation | None = None) -> Demonstrations:
    """Runs ``episodes`` episodes of ``env`` (a ``MicroLLMPowerEnv``) and labels every state with
    the expert's action.

    Episodes are independent: episode ``ep`` is reset with seed ``seed * 100_003 + ep`` and draws its
    DAgger coin from its own stream ``default_rng([seed, ep])``, so ``workers`` > 1 (Ray tasks,
    ``agents.parallel``) returns exactly the arrays of ``workers=1``.

    Args:
        env: The scalar env (its split and trace set are the data's).
        expert_name: A controller name from ``agents.registry``.
        episodes: Number of episodes (each up to ``max_steps`` steps; random trace and start).
        seed: Seeds the env resets and the driver coin.
        student: ``f(obs, mask) -> action`` acting with probability ``1 − beta`` (DAgger); picklable
            (``student_fn``) when ``workers`` > 1.
        beta: Probability that the expert's own action is executed at a step.
        workers: Ray workers for the episodes (1: this process, Ray is not imported). The ``random``
            expert draws from one generator across episodes, so it is always collected here.
        expert_kwargs: Passed to the expert's factory (e.g. the oracle's grid ``n_soc``, ``n_temp``,
            ``n_backlog``).
        randomise: The randomisation RL trains under (``train.py --demo-dr``): each episode draws its start
            charge, capacity and ambient shift as ``envs.batched`` does, from its own stream
            ``default_rng([seed, ep, 1])``.
    """
    t0 = time.time()
    job = _CollectJob(env, expert_name, seed, student, beta, max_steps, dict(expert_kwargs or {}), randomise)
    if workers > 1 and expert_name != "random":
        from agents.parallel import map_episodes

        eps = map_episodes(_collect_episode, range(episodes), workers, context=job, progress=progress, desc=desc)
    else:  # the serial path: no Ray
        eps = [_collect_episode(job, ep)
               for ep in tqdm(range(episodes), desc=desc, unit="ep", disable=not progress, leave=False)]
    if not eps:
        raise ValueError(f"collect: episodes must be >= 1, not {episodes}")
    obs, masks, labels, rewards = (np.concatenate([e[i] for e in eps]) for i in range(4))
    return Demonstrations(obs, masks, labels, rewards, np.cumsum([len(e[2]) for e in eps]).tolist(),
                          float(np.mean([e[4] for e in eps])) if student is None or beta >= 1.0 else float("nan"),
                          time.time() - t0)


def cheapest_labels(demos: Demonstrations, costs, feature_names, kind: str | None = None, drawn_share: float = 0.0,
                    rng: np.random.Generator | None = None, raised_share: float = 0.0,
                    raised_budget_share: float = 0.0, step_s: float = 0.0, grace_s: float = 0.0,
                    borrowed_share: float = 0.0) -> tuple[Demonstrations, int]:
    """``demos`` with the label of every min-energy step replaced by what static-smallest held to that step's mask
    would run (``agents.baselines.smallest_config`` stepped down by ``runtime.rules.step_down``, as
    ``agents.evaluate`` holds the rule): the cheapest configuration the masks allow, which under the floor rule is
    the cheapest that meets the floor within the budget. Returns the relabelled copy and how many labels changed.

    Why (``train.py --bc-min-energy-labels cheapest``): under min-energy the oracle's departures from the cheapest
    configuration are bets on bursts it foresees. A student cannot see them, and imitating them spent energy for
    nothing on held-out users (docs/objectives.md, "Where min-energy's floor is missed"). The drivers, states,
    masks and rewards are kept: only what the student is told to do changes.

    Min-energy steps are those whose observation has ``obj_min_energy`` set (a goal-conditioned layout); with
    ``kind`` "min-energy" and no objective block every step is one. ``feature_names``: the env's
    (``env.unwrapped.feature_names``), the layout the demonstrations were recorded in.

    ``drawn_share`` > 0 (``train.py --bc-drawn-masks``): that share of the min-energy steps (drawn with ``rng``) has
    its mask replaced by a random subset of every configuration (each kept with probability 1/2, at least one), and
    is labelled with what static-smallest would run under it. The label is a function of the mask, and a policy
    picks among what the masks allow by its ranking of them: the training users' floors allow only some pairs of
    configurations, so a held-out user whose floor allows another pair met a ranking never fitted (on fold 1's test
    user the student ran ``L6-H100-int4`` where ``L4-H050-int8`` met the floor for 30 % less energy per token).
    Drawn masks fit the whole ranking.

    ``raised_share`` > 0 (``train.py --bc-raised-floors``): that share of the min-energy steps (drawn with ``rng``,
    after ``drawn_share``'s) has its quality floor raised to a value drawn uniformly between it and the highest floor
    among the min-energy steps, in the observation (``quality_floor``) and in the mask: the configurations below the
    new floor are taken out when one that meets it is left, as the floor rule does (only approximately under a
    budget, where the rule may also spend the budget's reserve on the floor). The label follows. A user's floor is
    one value per episode, so the demonstrations hold a few dozen floors with gaps between them (fold 1: none in
    0.396-0.425, where ``L4-H050-int8`` is the cheapest to meet it); raised floors fill the gaps. The rows'
    rewards are those of the floor recorded.

    ``raised_budget_share`` > 0 (``train.py --bc-raised-budgets``): that share of the min-energy steps whose label
    meets its floor, in episodes with one power budget throughout, has the budget raised to a value drawn
    log-uniformly between it and the highest budget in the demonstrations, in the observation: ``budget_w`` and the
    allowance ``budget_left_frac``, recomputed for the same energy used by then (``step_s``: the env's step,
    ``grace_s``: ``EnvParams.budget_grace_s``; the k-th step of an episode has ``k·step_s`` elapsed). Where the
    label meets the floor the budget did not bind it: a larger budget only allows dearer configurations, so the
    label and the recorded mask (a subset of the larger budget's) stay. Why: each user brings one (budget, floor)
    pair, so the student can read the budget as a cue for the configuration; on fold 0's held-out phone session
    (2.07 W, a floor of 0.37) the student ran ``L6-H100-int4`` on every step where ``L3-H075-int8`` met the floor,
    and its choice moved with the budget alone. Raised budgets show the same label under many budgets.

    ``borrowed_share`` > 0 (``train.py --bc-borrowed-states``): that share of the min-energy steps (drawn with
    ``rng``, last) reads the device's state of another step of the demonstrations, drawn from all of them, whatever
    its objective: every feature but the objective and its constraints (``GOAL_FEATURES``: the objective one-hot,
    the floor, the budget and its allowance, the deadline) is copied from it. The mask and the label stay. Under
    min-energy the label is a function of the mask and the floor alone (the cheapest configuration the masks allow),
    so the device's state is no cue for it, but the demonstrations tie min-energy to the states its users were in.
    On fold 0's held-out laptop session (plugged in, full, a burst of demand) the student ran ``L6-H100-int4`` on 192
    steps where ``L3-H100-int8`` met the floor: what max-quality runs in that state. Borrowed states show the
    min-energy label in the states of every objective."""
    from agents.baselines import smallest_config

    names = list(feature_names)
    if "obj_min_energy" in names:
        rows = np.flatnonzero(demos.obs[:, names.index("obj_min_energy")] > 0.5)
    elif kind == "min-energy":
        rows = np.arange(len(demos))
    else:
        raise ValueError("no min-energy step can be told apart: the observation has no objective block "
                         "(obj_min_energy) and the objective is not min-energy")
    for name, share in (("drawn_share", drawn_share), ("raised_share", raised_share),
                        ("raised_budget_share", raised_budget_share), ("borrowed_share", borrowed_share)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} {share}: a share in [0, 1]")
    smallest = smallest_config(costs)
    labels, masks = demos.labels.copy(), demos.masks
    # one copy of the observations when an option writes them (the input is never written)
    writes_obs = rows.size and (raised_share > 0 or raised_budget_share > 0 or borrowed_share > 0)
    obs = demos.obs.copy() if writes_obs else demos.obs
    rng = rng if rng is not None else np.random.default_rng(0)
    if drawn_share > 0 and rows.size:
        drawn = rows[rng.random(rows.size) < drawn_share]
        masks = demos.masks.copy()
        subset = rng.random((drawn.size, masks.shape[1])) < 0.5
        empty = ~subset.any(axis=1)
        subset[np.flatnonzero(empty), rng.integers(masks.shape[1], size=int(empty.sum()))] = True
        masks[drawn] = subset
    if raised_share > 0 and rows.size:
        if "quality_floor" not in names:
            raise ValueError("raised floors need the floor in the observation (quality_floor, a goal-conditioned "
                             "layout)")
        col = names.index("quality_floor")
        raised = rows[rng.random(rows.size) < raised_share]
        top = float(obs[rows, col].max())
        new_floor = obs[raised, col] + rng.random(raised.size) * (top - obs[raised, col])
        masks = masks.copy()
        obs[raised, col] = new_floor
        # the floor rule's own mask, row by row (without a throughput table it prunes nothing where none meets it)
        masks[raised] = Feasibility(costs.ept_j, quality=costs.quality).floor_mask(new_floor, masks[raised])
    for i in rows:
        labels[i] = step_down(smallest, masks[i], costs.ept_j, costs.quality)
    if raised_budget_share > 0 and rows.size:
        raise_budgets(obs, rows, labels, demos.episode_ends, costs, names, raised_budget_share, rng, step_s, grace_s)
    if borrowed_share > 0 and rows.size:
        borrow_states(obs, rows, names, borrowed_share, rng)
    changed = int(np.count_nonzero(labels != demos.labels))
    return Demonstrations(obs, masks, labels, demos.rewards, list(demos.episode_ends),
                          demos.expert_return, demos.seconds), changed


#: the objective's parameters and constraints in the observation, which a borrowed state keeps (with obj_*)
GOAL_FEATURES = ("quality_floor", "budget_w", "has_budget", "budget_left_frac", "has_deadline", "time_to_deadline_h")


def borrow_states(obs: np.ndarray, rows: np.ndarray, names: list[str], share: float,
                  rng: np.random.Generator) -> None:
    """``obs`` written in place: a ``share`` of ``rows`` reads every feature of a row drawn from all of ``obs`` except
    the objective block and ``GOAL_FEATURES`` (``cheapest_labels``' ``borrowed_share``)."""
    keep = [i for i, n in enumerate(names) if n in GOAL_FEATURES or n.startswith("obj_")]
    borrowed = rows[rng.random(rows.size) < share]
    donors = rng.integers(len(obs), size=borrowed.size)
    own = obs[np.ix_(borrowed, keep)]
    obs[borrowed] = obs[donors]  # the donors' rows as drawn (a donor may itself be a borrowed row: read first)
    obs[np.ix_(borrowed, keep)] = own


def raise_budgets(obs: np.ndarray, rows: np.ndarray, labels: np.ndarray, episode_ends, costs, names: list[str],
                  share: float, rng: np.random.Generator, step_s: float, grace_s: float) -> None:
    """``obs`` written in place: the budget of a ``share`` of ``rows`` raised, where the label
    meets the floor and the episode has one budget throughout (``cheapest_labels``' ``raised_budget_share``)."""
    for need in ("budget_w", "budget_left_frac", "quality_floor"):
        if need not in names:
            raise ValueError(f"raised budgets need {need} in the observation (a goal-conditioned layout)")
    if not step_s > 0:
        raise ValueError(f"raised budgets need the env's step (step_s > 0), got {step_s!r}")
    cb, cf, cq = (names.index(n) for n in ("budget_w", "budget_left_frac", "quality_floor"))
    ends = np.asarray(episode_ends, np.int64)
    starts = np.r_[0, ends[:-1]]
    episode = np.searchsorted(ends, rows, side="right")  # the episode of each row
    budget = obs[rows, cb].astype(np.float64)
    col = obs[:, cb]
    one = np.minimum.reduceat(col, starts) == np.maximum.reduceat(col, starts)  # per episode: one budget throughout
    eligible = (budget > 0) & one[episode] & (costs.quality[labels[rows]] >= obs[rows, cq] - 1e-9)
    top = float(obs[obs[:, cb] > 0, cb].max()) if (obs[:, cb] > 0).any() else 0.0
    chosen = rng.random(rows.size) < share
    pick = eligible & chosen & (budget < top)
    r, b = rows[pick], budget[pick]
    new_b = b * np.exp(rng.random(r.size) * np.log(top / b))
    elapsed_h = ((r - starts[episode[pick]]) * step_s + grace_s) / 3600.0
    frac = obs[r, cf].astype(np.float64)
    # allowance = b (elapsed + grace) − used, in hours of budget; the same energy used under the new budget
    new_frac = ((new_b - b) * elapsed_h + frac * b) / new_b
    obs[r, cb] = new_b
    obs[r, cf] = np.where(frac >= 1.0, 1.0, np.minimum(new_frac, 1.0))  # the layout clips at 1 h


@dataclass(frozen=True)
class DemoRandomisation:
    """The battery and weather randomisation of ``envs.batched`` (``train.py --low-soc-frac``, ``--capacity-sigma``,
    ``--hot-frac``) as reset options of the scalar env, so that demonstrations cover the states RL trains on."""

    low_soc_frac: float = 0.0  # share of episodes that start with SoC ~ U(reserve_soc, envs.batched.LOW_SOC_MAX)
    capacity_sigma: float = 0.0  # capacity x exp(sigma N(0, 1))
    reserve_soc: float = 0.05  # the env's reserve (EnvParams.reserve_soc): the lowest start charge drawn
    hot_frac: float = 0.0  # share of episodes whose ambient is raised by U(0, envs.batched.HOT_SHIFT_MAX_C) deg C

    def draw(self, rng: np.random.Generator) -> dict[str, float]:
        """This episode's reset options, drawn by ``envs.batched.draw_episode_randomisation``."""
        from envs.batched import draw_episode_randomisation

        soc, scale, shift = draw_episode_randomisation(rng, self.reserve_soc, self.low_soc_frac, self.capacity_sigma,
                                                       self.hot_frac)
        o = {"soc": soc} if soc is not None else {}
        if self.capacity_sigma > 0.0:
            o["capacity_scale"] = scale
        if shift:
            o["ambient_shift_c"] = shift
        return o


@dataclass
class _CollectJob:
    """What every episode of one ``collect`` call needs; shipped once to each Ray worker."""

    env: Any
    expert_name: str
    seed: int
    student: Any
    beta: float
    max_steps: int
    expert_kwargs: dict
    randomise: DemoRandomisation | None = None
    expert: Any = None  # built on first use in each process, then reused (experts reset per episode)


def _collect_episode(job: _CollectJob, ep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Episode ``ep`` of ``job``: (obs, masks, labels, rewards, return)."""
    env, seed = job.env, job.seed
    if job.expert is None:
        kw = {"seed": seed} if job.expert_name == "random" else {}
        job.expert = make_controller(job.expert_name, env, **kw, **job.expert_kwargs)
        if hasattr(job.expert, "bind"):
            job.expert.bind(env)
    expert, student, beta = job.expert, job.student, job.beta
    # a rule that ignores the masks is held to them, as in agents.evaluate: its label is what it would run
    held = held_to_masks(expert)
    costs = env.unwrapped.costs
    rng = np.random.default_rng([seed, ep]) if student is not None else None  # this episode's DAgger coin
    obs_l, mask_l, lab_l, rew_l = [], [], [], []
    options = job.randomise.draw(np.random.default_rng([seed, ep, 1])) if job.randomise else None
    obs, _ = env.reset(seed=seed * 100_003 + ep, options=options)
    ret = 0.0
    for t in range(job.max_steps):
        mask = env.unwrapped.action_masks()
        label = expert_label(expert, obs, mask, costs, t == 0, held)
        act = label if (student is None or rng.random() < beta) else int(student(obs, mask))
        obs_l.append(obs)
        mask_l.append(mask)
        lab_l.append(label)
        obs, r, term, trunc, _ = env.step(act)
        rew_l.append(float(r))
        ret += float(r)
        if term or trunc:
            break
    return (np.asarray(obs_l, np.float32), np.asarray(mask_l, bool), np.asarray(lab_l, np.int64),
            np.asarray(rew_l, np.float64), ret)


def expert_label(expert, obs: np.ndarray, mask: np.ndarray, costs, episode_start: bool, held: bool) -> int:
    """The expert's action for ``obs``. A rule that ignores the masks (``held``: ``agents.base.held_to_masks``) is
    held to them, as in ``agents.evaluate``: its forbidden choice is stepped down to what it would run. So is the
    masked oracle's where the env's masks hold a rule its plan does not (the power budget, ``EnvParams.budget_rule``:
    ``agents.oracle``), as the device's shield would step it down: the masked policy it teaches cannot learn a label
    its masks forbid. (Elsewhere its choices are always allowed.)"""
    label = int(np.asarray(expert.predict(obs, episode_start=np.array([episode_start]))[0]).reshape(-1)[0])
    if not mask[label] and (held or getattr(expert, "name", "") == "oracle-masked"):
        label = step_down(label, mask, costs.ept_j, costs.quality)
    return label


class FrozenRunningMeanStd(RunningMeanStd):
    """A ``RunningMeanStd`` whose ``update`` does nothing: ``mean``, ``var`` and ``count`` stay as set (and can
    still be set, e.g. by ``train.KeepBest.restore``)."""

    def __init__(self, rms: RunningMeanStd) -> None:
        super().__init__(shape=np.shape(rms.mean))
        self.mean, self.var, self.count = np.array(rms.mean, np.float64), np.array(rms.var, np.float64), rms.count
        if hasattr(rms, "lo"):  # agents.obs_support: the support frozen with the statistics
            self.lo, self.hi = np.array(rms.lo, np.float64), np.array(rms.hi, np.float64)

    def update(self, arr: np.ndarray) -> None:  # noqa: ARG002 - frozen on purpose
        return None

    def copy(self) -> FrozenRunningMeanStd:
        return FrozenRunningMeanStd(self)


def freeze_obs_normalisation(vecnorm) -> None:
    """Stops ``vecnorm`` (a ``VecNormalize``) from updating its observation statistics; the return statistics
    (reward normalisation) keep updating. ``train.py --freeze-obs-norm``: after a warm start the imitated policy
    keeps reading its inputs as it was fitted to them."""
    vecnorm.obs_rms = FrozenRunningMeanStd(vecnorm.obs_rms)


def _takes_masks(policy) -> bool:
    """Whether ``policy`` (an SB3 / sb3-contrib actor-critic) takes action masks: sb3-contrib's maskable ones do."""
    return "action_masks" in policy.evaluate_actions.__code__.co_varnames


def chosen_probability(model, vecnorm, demos: Demonstrations, factorisation=None, n: int = 20_000,
                       seed: int = 0) -> float:
    """Mean probability the policy's stochastic action equals its deterministic one, over up to ``n`` demonstration
    states (masks applied; for a factorised head, the product over the families): 1 when the policy never explores.
    ``train.py`` prints it before and after ``--bc-explore``."""
    policy = model.policy
    idx = np.random.default_rng(seed).choice(len(demos), size=min(n, len(demos)), replace=False)
    obs = demos.obs[idx].copy()
    obs = vecnorm.normalize_obs(obs) if vecnorm.norm_obs else obs
    mask = demos.masks[idx] if factorisation is None else factorisation.masks(demos.masks[idx])
    masked = _takes_masks(policy)
    with torch.no_grad():
        x = torch.as_tensor(obs, dtype=torch.float32)
        dist = policy.get_distribution(x, action_masks=mask) if masked else policy.get_distribution(x)
        d = getattr(dist, "distribution", None)
        parts = d if isinstance(d, list) else (dist.distributions if d is None else [d])
        p = torch.ones(len(idx))
        for c in parts:
            p = p * c.probs.max(-1).values
    return float(p.mean())


def temper_policy(model, temperature: float) -> None:
    """Divides the policy's action logits by ``temperature`` (every parameter of the action head, which is linear in
    them: a Linear's weights and bias, every family's for a factorised head, ``agents.joint_head``'s). The ordering
    of each state's logits, and so every deterministic decision, is unchanged; above 1 the stochastic policy spreads
    its probability over the alternatives."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with torch.no_grad():  # every parameter of the head (a Linear's weight and bias; agents.joint_head's too)
        for p in model.policy.action_net.parameters():
            p.div_(temperature)


def temper_to_explore(model, vecnorm, demos: Demonstrations, explore: float, factorisation=None, seed: int = 0,
                      max_temperature: float = 1e4) -> dict[str, float]:
    """Tempers the policy (:func:`temper_policy`) so that its stochastic action departs from its deterministic one
    with probability ``explore`` on average over demonstration states (:func:`chosen_probability`; bisection on the
    log-temperature, which the probability falls with monotonically; never below temperature 1).
    ``train.py --bc-explore``: a clone fitted to 100 % accuracy takes its expert's action with probability 1.0000,
    so PPO's rollouts never try another configuration and the RL step has no advantage to follow; a temperature is
    meaningless across clones (their logit gaps differ), a departure rate is not.
    Returns ``{"explore", "temperature", "chosen_prob_before", "chosen_prob_after"}``."""
    if not 0.0 < explore < 1.0:
        raise ValueError(f"explore must be in (0, 1), got {explore}")
    params = list(model.policy.action_net.parameters())  # the head is linear in all of them
    p0 = [p.detach().clone() for p in params]

    def chosen_at(t: float) -> float:
        with torch.no_grad():
            for p, v in zip(params, p0):
                p.copy_(v / t)
        return chosen_probability(model, vecnorm, demos, factorisation, seed=seed)

    before = chosen_at(1.0)
    target = 1.0 - explore
    lo, hi = 0.0, float(np.log(max_temperature))  # log-temperature bracket
    if before <= target:
        hi = 0.0  # already explores that much: leave it as fitted
    elif chosen_at(max_temperature) > target:
        lo = hi  # cannot reach it (states where the masks leave one choice): the most it can
    for _ in range(40 if lo < hi else 0):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if chosen_at(float(np.exp(mid))) > target else (lo, mid)
    t = float(np.exp(hi))
    after = chosen_at(t)
    return {"explore": explore, "temperature": t, "chosen_prob_before": before, "chosen_prob_after": after}


def fit_normalisation(vecnorm, demos: Demonstrations, gamma: float) -> None:
    """Sets the training ``VecNormalize``'s observation and return statistics from the demos, so the
    pretrained networks see the inputs and targets PPO will give them."""
    if vecnorm.norm_obs:
        vecnorm.obs_rms.mean = demos.obs.mean(axis=0).astype(np.float64)
        vecnorm.obs_rms.var = demos.obs.var(axis=0).astype(np.float64)
        vecnorm.obs_rms.count = float(len(demos))
        if hasattr(vecnorm.obs_rms, "set_support"):  # train.py --clamp-obs: the demos' range, as seen
            vecnorm.obs_rms.set_support(demos.obs)
    if vecnorm.norm_reward:
        fit_reward_scale(vecnorm, demos, gamma)


def fit_reward_scale(vecnorm, demos: Demonstrations, gamma: float) -> None:
    """Sets the training ``VecNormalize``'s reward-scale statistic from the demos' running returns."""
    rr = demos.running_returns(gamma)
    vecnorm.ret_rms.mean = float(rr.mean())
    vecnorm.ret_rms.var = float(rr.var())
    vecnorm.ret_rms.count = float(rr.size)


def pretrain(model, vecnorm, demos: Demonstrations, *, epochs: int = 10, batch_size: int = 1024,
             lr: float = 1e-3, vf_coef: float = 0.5, seed: int = 0, logger=None,
             progress: bool = True, factorisation=None) -> dict[str, Any]:
    """Fits ``model.policy`` (an SB3 / sb3-contrib actor-critic) to the demonstrations.

    ``factorisation`` (``runtime.factorised.Factorisation``): the policy has the factorised head; each label
    becomes its knob-value vector and each mask the per-family masks (the demonstrations stay flat).

    Returns the last epoch's ``{"bc_loss", "bc_accuracy", "value_loss"}`` (accuracy: the whole configuration
    right, every family at once, for a factorised head).
    """
    policy = model.policy
    gamma = float(model.gamma)
    obs = vecnorm.normalize_obs(demos.obs.copy()) if vecnorm.norm_obs else demos.obs
    ret = demos.returns_to_go(gamma)
    if vecnorm.norm_reward:
        ret = np.clip(ret / np.sqrt(vecnorm.ret_rms.var + vecnorm.epsilon), -vecnorm.clip_reward / (1 - gamma),
                      vecnorm.clip_reward / (1 - gamma))
    x = torch.as_tensor(obs, dtype=torch.float32)
    fac = factorisation
    y = torch.as_tensor(demos.labels if fac is None else fac.values[demos.labels])
    m = torch.as_tensor(demos.masks if fac is None else fac.masks(demos.masks))
    v = torch.as_tensor(ret, dtype=torch.float32)
    masked = _takes_masks(policy)
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    policy.set_training_mode(True)
    stats: dict[str, Any] = {}
    n = len(demos)
    for epoch in tqdm(range(epochs), desc="pretrain", unit="epoch", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen)
        tot_bc = tot_v = correct = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            if masked:
                values, logp, _ = policy.evaluate_actions(x[idx], y[idx], action_masks=m[idx].numpy())
            else:
                values, logp, _ = policy.evaluate_actions(x[idx], y[idx])
            bc = -logp.mean()
            vl = torch.nn.functional.mse_loss(values.flatten(), v[idx])
            loss = bc + vf_coef * vl
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            opt.step()
            tot_bc += bc.item() * idx.numel()
            tot_v += vl.item() * idx.numel()
            with torch.no_grad():
                dist = policy.get_distribution(x[idx], action_masks=m[idx].numpy()) if masked else \
                    policy.get_distribution(x[idx])
                d = getattr(dist, "distribution", None)
                if d is None or isinstance(d, list):  # MultiDiscrete: one categorical per family
                    parts = d if d is not None else dist.distributions
                    pred = torch.stack([c.probs.argmax(-1) for c in parts], dim=1)
                    correct += float((pred == y[idx]).all(1).sum())
                else:
                    correct += float((d.probs.argmax(-1) == y[idx]).sum())
        stats = {"bc_loss": tot_bc / n, "bc_accuracy": correct / n, "value_loss": tot_v / n, "epoch": epoch}
        if logger is not None:
            for k, val in stats.items():
                if k != "epoch":
                    logger.record(f"pretrain/{k}", val)
            logger.dump(epoch)
    policy.set_training_mode(False)
    return stats


class PolicyStudent:
    """``f(obs, mask) -> action``: the model's deterministic action on a raw observation.

    Holds the live policy and ``VecNormalize`` (a fit after ``student_fn`` is seen, as before); it pickles
    (``VecNormalize`` drops its env when pickled), so DAgger episodes can run on Ray workers.
    """

    def __init__(self, policy, vecnorm, factorisation=None):
        self.policy, self.vecnorm, self.fac = policy, vecnorm, factorisation

    def __call__(self, obs: np.ndarray, mask: np.ndarray) -> int:
        vn = self.vecnorm
        o = vn.normalize_obs(np.asarray(obs, np.float32)[None].copy()) if vn.norm_obs else obs[None]
        if self.fac is not None:  # a factorised head: per-family masks in, a configuration index out
            a, _ = self.policy.predict(o, deterministic=True, action_masks=self.fac.masks(mask[None]))
            return int(self.fac.index(np.asarray(a).reshape(1, -1), np.asarray(mask, bool)[None])[0])
        try:  # MaskablePPO's policy takes the masks; SB3's does not
            a, _ = self.policy.predict(o, deterministic=True, action_masks=mask[None])
        except TypeError:
            a, _ = self.policy.predict(o, deterministic=True)
        return int(np.asarray(a).reshape(-1)[0])


def student_fn(model, vecnorm, factorisation=None) -> PolicyStudent:
    """``f(obs, mask) -> action``: the model's deterministic action on a raw observation
    (``model.predict`` is ``model.policy.predict``); a configuration index also for a factorised head."""
    return PolicyStudent(model.policy, vecnorm, factorisation)


__all__ = ["Demonstrations", "PolicyStudent", "chosen_probability", "collect", "fit_normalisation", "pretrain",
           "student_fn", "temper_policy", "temper_to_explore"]
