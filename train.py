"""Train a power policy for the elastic micro-LLM and judge it against the baselines.

    python train.py                      # the main job: imitate the masked oracle (3 DAgger rounds), then RL
    python train.py --bc-expert none     # from scratch: MaskablePPO, factorised head (10 M steps)
    python train.py --bc-expert schedutil   # imitate the rule first, then RL (2 M steps at 3e-5 by default)
    python train.py --algo ppo --bc-expert none --traces data/real --total-timesteps 2e6
    python train.py --traces data/real --bc-expert oracle --dagger-rounds 2 --total-timesteps 0   # distil the oracle

MaskablePPO is the default because plain PPO, without the env's action masks, keeps choosing
configurations that overheat the phone (real-data test split: 0.72 oracle-normalised vs 0.88-0.92
for MaskablePPO; README has the tables). The strongest learned policy there is distilled from the
offline oracle (``--bc-expert oracle --dagger-rounds 2 --total-timesteps 0``: 0.92-0.94 over five seeds).

Reads top to bottom: args -> seed -> profile + traces -> env -> agent -> (warm start) -> learn ->
keep the best-on-val policy -> save -> evaluate.
Arguments are range-checked (usage error, exit 2) and the trace splits, profile and envs are checked
and built before the run folder exists; a start that fails leaves no empty folder.
Outputs a run folder ``runs/{env}__{exp}__{seed}__{time}/``, created exclusively (``-2``, ``-3``, ...
when another run took the name in the same second; see ``agents.run_io``) with the
model, its normalisation statistics, config, TensorBoard logs (``charts/``, ``losses/``,
``eval/``, ``train/``) and the evaluation report on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.logger import HParam
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper, VecMonitor, VecNormalize
from tqdm import tqdm

import envs
from agents.algos import ALGOS, algo
from agents.obs_support import SupportVecNormalize
from agents.run_io import run_host, save_run
from envs.batched import HOT_TRIP_MARGIN_C, LOW_SOC_MAX, BatchedPowerEnv
from envs.power_env import DEFAULT_PROFILE, MicroLLMPowerEnv
from model.cli import (
    check_value,
    float_in,
    int_in,
    nonneg_float,
    nonneg_int,
    parse_dataclass_args,
    positive_float,
    positive_int,
)
from model.evaluate import file_sha256
from runtime.dynamics import TERM_NAMES, EnvParams, episode_objective
from runtime.safeio import exclusive_dir

HYPERPARAMS = Path(__file__).parent / "agents" / "hyperparams"
#: the main job's environment parameters: EnvParams' defaults plus three observation options, the thermal headroom
#: as a fraction of the costliest configuration's power (cap 2), the demand smoothed over 60 s and the power block
#: relative to the device (cap 4; with --obs-drop power_w the watts that tell a laptop from a phone are dropped).
#: With the recipe of the Args defaults they beat every heuristic on the default test split in 6 of 6 seeds
#: (docs/agents.md, "The main job's defaults"). The environment's own defaults (gym.make, the runtime) keep the base
#: observation: policy files written before read as they did.
MAIN_JOB_ENV = EnvParams(thermal_obs=True, thermal_cap=2.0, demand_avg_s=60.0, power_cap=4.0)
#: the algorithms whose actor-critic takes a MultiDiscrete action space (the factorised head; a Q-network does not)
FACTORISED_ALGOS = ("maskable_ppo", "ppo")
#: after a warm start, the RL step's defaults (--learning-rate 0, --total-timesteps -1): a tenth of the YAML's
#: step size keeps the imitated policy while it improves; the val return peaks within the first 1-2 M steps
WARM_START_LR = 3e-5
WARM_START_TIMESTEPS = 2_000_000


@dataclass
class Args:
    algo: str = "maskable_ppo"
    """maskable_ppo (default: sb3-contrib PPO with the env's action masks) | ppo | dqn"""
    exp_name: str = "wattwise"
    """experiment name, part of the run folder name"""
    seed: int = 1
    """seed of the agent, the env batch and the evaluation"""
    profile: str = str(DEFAULT_PROFILE)
    """cost profile JSON (python -m model.profile); default: the committed reference profile"""
    traces: str | None = None
    """trace-set folder (default: the generated default set, traces/data/default)"""
    total_timesteps: float = -1.0
    """environment steps to train for (-1: the YAML's n_timesteps from scratch, WARM_START_TIMESTEPS after a warm
    start; 0: no RL, e.g. a warm start only)"""
    n_envs: int = 0
    """parallel environments in the batched env (0: the YAML's n_envs)"""
    learning_rate: float = 0.0
    """optimiser step size (0: the YAML's from scratch, WARM_START_LR after a warm start: PPO's step size
    from scratch undoes the imitated policy within a few updates)"""
    gamma: float = 0.0
    """discount factor of the RL step, its critic and the reward normalisation (0: the YAML's, 0.995: a ~200-step
    horizon; e.g. 0.999 for ~1000 steps, longer than an episode's 720, closer to the undiscounted score)"""
    speed_sigma: float = 0.0
    """domain randomisation over the host's speed: each training episode runs every configuration
    exp(sigma*N(0,1)) times slower than the profile (envs.batched); e.g. 0.25 for a policy that must hold up on
    hosts 20-30 percent off the profile; 0: the profile's host. The val and test episodes use the profile's host"""
    low_soc_frac: float = 0.25
    """domain randomisation over the battery: this share of the training episodes starts nearly empty (state of
    charge uniform between the reserve and 0.3; envs.batched), so that the policy learns what an empty battery
    costs from more than the few real sessions that start low; 0: every episode starts at its trace's charge"""
    capacity_sigma: float = 0.8
    """domain randomisation over the battery's capacity: each training episode's capacity is the trace's times
    exp(sigma*N(0,1)), so that the same charge means more or less time to empty; 0: the trace's capacity"""
    hot_frac: float = 0.3
    """domain randomisation over the weather: this share of the training episodes has its ambient temperature
    raised by U(0, 20) deg C (envs.batched), so that the policy runs near the thermal trip point far more often
    than the few heat-wave traces show it; 0: every episode at its trace's ambient"""
    hot_trip: bool = False
    """with --hot-frac: place a hot episode relative to its device's trip point, its mean ambient U(2, 10) deg C
    below it (envs.batched.HOT_TRIP_MARGIN_C), instead of raising the ambient by U(0, 20) deg C: every device kind's
    hot episodes then land where the thermal rules decide (a blind shift reaches a laptop's 70 deg C never)"""
    action_head: str = "auto"
    """factorised: one categorical per knob family (depth, heads, bits, place, split ...; agents.factorised), sum
    instead of product of the value counts, each knob's choice learnt from every configuration that shares it;
    flat: one logit per configuration; joint: the factorised head's per-knob logits summed into one logit per
    configuration and masked jointly (agents.joint_head: the factorised parameters, the flat head's exact masked
    distribution; saved and exported as a flat layer); hybrid: joint plus a free per-configuration layer from zero
    (as expressive as flat, the knob rows shared); auto (default): flat after a warm start (only the flat head
    can express the masked oracle's choices under the thermal cap; docs/agents.md), from scratch factorised for
    the actor-critics (maskable_ppo, ppo) and flat for dqn (a Q-network needs one value per action)"""
    env: EnvParams = field(default_factory=lambda: MAIN_JOB_ENV)
    """environment parameters (runtime.dynamics.EnvParams): --env.step-s, --env.slo-ms, --env.lookahead,
    --env.weights.death, ...; stored in the run folder and the exported policy. Default: MAIN_JOB_ENV, the
    environment's defaults with the thermal block as a fraction and the smoothed demand observed (turn them off
    with --no-env.thermal-obs --env.thermal-cap 0 --env.demand-avg-s 0)"""
    bc_expert: str = "oracle-masked"
    """warm start: imitate this controller (agents.registry name, e.g. oracle, oracle-masked, schedutil) before
    RL; none (or empty): start from scratch. Default: the masked oracle, the best any policy that obeys the masks
    can do, labelling every state exactly (also the randomised ones of --demo-dr); docs/agents.md, section "The main
    job's defaults"
    """
    bc_episodes: int = 64
    """expert-driven train-split episodes collected for behaviour cloning"""
    bc_oracle_grid: str = "51,13,5"
    """the oracle experts' grid n_soc,n_temp,n_backlog (e.g. 51,13,5: ~5x faster planning than the default,
    the evaluation grid of the benchmarks; the default); empty: the oracle's default 101,25,7"""
    bc_demos: str = ""
    """reuse demonstrations saved by an earlier run (<run>/warm_start/demos.npz) instead of collecting"""
    warm_start_from: str = ""
    """start the RL step from a warm start saved by an earlier run (<run>/warm_start): its weights and
    normalisation statistics, nothing collected or fitted again, so that RL settings can be compared on one
    imitated policy (e.g. --no-rl-dr against the default) at the RL step's cost alone. Its recipe must be this
    run's (algorithm, action head, env parameters, observation, configuration space, network, profile): checked.
    Needs --bc-expert (the default): the RL step's step size and length are those after a warm start"""
    bc_min_energy_labels: str = "expert"
    """with --bc-expert: what the student is told to run on min-energy steps. expert: the expert's own label;
    cheapest: the cheapest configuration the masks allow, what static-smallest held to the masks runs
    (agents.imitation.cheapest_labels). The oracle's departures from it under min-energy are bets on bursts it
    foresees; a student cannot see them. The saved demonstrations keep the expert's labels"""
    bc_drawn_masks: float = 0.0
    """with --bc-min-energy-labels cheapest: the share of min-energy steps whose mask is replaced by a random subset
    of every configuration, labelled with the cheapest of it, so the student ranks every configuration by cost and
    not only the pairs the training users' floors allowed (agents.imitation.cheapest_labels)"""
    bc_raised_floors: float = 0.0
    """with --bc-min-energy-labels cheapest: the share of min-energy steps whose quality floor is raised, in the
    observation and the mask, to a value drawn between it and the demonstrations' highest, so the student meets floors
    between the few dozen the training users set (agents.imitation.cheapest_labels)"""
    bc_raised_budgets: float = 0.0
    """with --bc-min-energy-labels cheapest: the share of min-energy steps whose label meets the floor that get their
    power budget raised in the observation (drawn log-uniformly up to the demonstrations' highest), so the student
    does not read the budget as a cue for the configuration where it does not bind (agents.imitation.raise_budgets)"""
    bc_borrowed_states: float = 0.0
    """with --bc-min-energy-labels cheapest: the share of min-energy steps that read the device's state of another
    demonstration step (any objective), keeping their objective, floor, budget, mask and label, so the student does
    not read the device's state as a cue for min-energy's choice (agents.imitation.borrow_states)"""
    dagger_rounds: int = 3
    """DAgger rounds after behaviour cloning: the student drives, the expert labels (only with --bc-expert)"""
    dagger_episodes: int = 64
    """episodes collected per DAgger round"""
    dagger_beta: float = 0.3
    """probability the expert's own action is executed during DAgger collection"""
    demo_dr: bool = True
    """with a warm start: collect its episodes (behaviour cloning and DAgger) under the randomisation RL trains
    under (--low-soc-frac, --capacity-sigma, --hot-frac; not --speed-sigma), so that the imitated policy has seen
    the states RL meets, hot ones above all; nothing to do without an expert or with all three at 0; off
    (--no-demo-dr): every demonstration at its trace's charge, capacity and ambient"""
    rl_dr: bool = True
    """randomise the RL step's episodes (--speed-sigma, --low-soc-frac, --capacity-sigma, --hot-frac). Off
    (--no-rl-dr): RL trains on the traces as recorded (their charge, capacity, ambient and host), and the
    randomisation applies to the warm start's demonstrations only (--demo-dr). The randomised distribution is
    harsher than the real one (a quarter of the episodes nearly empty, half the batteries smaller), and a policy
    that optimises it learns a caution that real sessions often do not pay for (docs/agents.md, "The RL step on the
    randomised episodes")"""
    bc_epochs: int = 20
    """passes over the demonstrations per fit"""
    bc_lr: float = 1e-3
    """Adam step size of the imitation fit"""
    bc_explore: float = 0.0
    """with --bc-expert: temper the imitated policy before the RL step so that its stochastic action departs from
    its deterministic one with this probability on average over the demonstration states (its logits divided by
    the temperature that gives it, agents.imitation.temper_to_explore). Every deterministic decision, and so the
    warm start's val return, stays the expert's; but a clone fitted to 100 % accuracy takes its expert's action
    with probability 1.0000, so without it PPO's rollouts never try another configuration and the RL step has no
    advantage to follow. 0: the clone as fitted"""
    clone_kl: float = 0.0
    """with --bc-expert: weight of a KL(imitated policy || policy) penalty in the RL loss (agents.clone_kl), so
    that RL moves away from the imitated rule only where the advantage pays for it; 0: plain MaskablePPO.
    maskable_ppo only"""
    critic_warmup: float = 0.0
    """with --bc-expert: the first this many RL steps train the value function only, the actor frozen
    (agents.critic_warmup), so that PPO's first policy updates use advantages from a critic fitted to the imitated
    policy's own returns rather than to the expert's (whose foresight makes them higher); counted in
    --total-timesteps. 0: off"""
    shape_energy: float = 0.0
    """potential-based reward shaping by the battery's energy deficit (agents.shaping): while the charge above the
    reserve falls short of what the full model would draw on the trace's demand until the episode ends, every
    joule saved earns this multiple of the profile's cheapest quality-for-energy exchange rate at once, instead of
    300-600 steps later when the shield would force the smallest configuration. Policy-invariant (Ng et al. 1999):
    it only moves credit; episode returns, val and every score stay unshaped. With --shape-potential dual, the
    multiple of the dual potential instead (1: the value the energy constraint costs). 0: off"""
    shape_potential: str = "deficit"
    """the potential of --shape-energy (agents.shaping): deficit (one constant price per joule while the full model
    cannot run to the end) or dual (the Lagrangian dual of the remaining energy budget: a price per state, high where
    the battery barely covers the smallest configuration)"""
    train_death_weight: float = 0.0
    """a price on battery death in the training reward only (agents.shaping.DeathWeight), in place of the env's
    --env.weights.death: the expert that labels the warm start knows when each session ends and spends a low
    battery to its last joule where it ends in time; a higher price asks the policy to hedge where it cannot tell.
    Changes the optimal policy (it is not shaping); episode returns, val and every score keep the env's weight.
    0: off (the env's weight)"""
    workers: int = 1
    """Ray workers for the expert-labelled episodes of --bc-expert and DAgger (1: this process, Ray is not
    imported; > 1 needs pip install -e '.[cluster]'; a cluster via RAY_ADDRESS); the same demonstrations either way"""
    lagrangian: bool = False
    """constrained variant: subtract lambda * cost, lambda learnt by dual ascent toward cost_limit"""
    cost_limit: float = 0.0
    """target mean cost per step for the Lagrangian variant"""
    lagrange_lr: float = 0.05
    """dual-ascent step size of lambda per rollout"""
    eval_freq: int = 250_000
    """environment steps between evaluations on the val split"""
    eval_episodes: int = 24
    """val episodes per evaluation: the same fixed episodes every time, so evaluations are comparable; traces
    spread evenly over the val split from row 0, or, when the split has fewer traces, each trace from several
    start rows (spread_val_episodes), env.max_episode_steps long"""
    val_hot_episodes: int = 0
    """extra val episodes near the thermal trip point: copies of the first val episodes with the ambient raised so
    that the trace's mean ambient lies 2 to 10 deg C (spread evenly) below its device's trip point
    (hot_val_episodes). The default set's val split has no episode where a phone's thermal limit binds (its heat
    wave is on a laptop), so without them model selection cannot see a policy's behaviour in the heat; 0: none"""
    val_low_soc_episodes: int = 0
    """extra val episodes on a nearly empty battery: copies of the first val episodes started at a charge spread
    evenly over (reserve, envs.batched.LOW_SOC_MAX] (low_soc_val_episodes; the band --low-soc-frac trains on). From
    its traces' own charge no val episode of the default set reaches the battery reserve, so without them model
    selection cannot see whether a policy saves charge for the end of an episode; 0: none"""
    val_rules: bool = True
    """val episodes hold the user's quality floor and power budget in the action masks (EnvParams.floor_rule,
    budget_rule), as agents.evaluate, the objectives reports and the device's shield do whatever a run was trained
    with, so that the policy kept (--select-best) is chosen on what is scored and deployed; off (--no-val-rules):
    val runs in the training env's own parameters"""
    select_best: bool = True
    """keep the policy (and its normalisation statistics) with the best val return, not the last one;
    the last is kept in <run>/last"""
    select_warm_start: bool = False
    """with select_best and a warm start: the imitated policy is a candidate too, kept when no RL checkpoint beats
    its val return (config.json says "selected": {"from": "warm start"}); off: the best RL checkpoint is kept even
    when the RL step made the policy worse on val"""
    freeze_obs_norm: bool = True
    """with a warm start (nothing to keep from scratch): keep the observation normalisation statistics the
    imitated policy was fitted under for the whole RL step (VecNormalize otherwise updates them with every RL
    step, so after 250 k steps the imitated policy reads shifted inputs and acts differently before any gradient
    step; measured in docs/agents.md,
    "Normalisation drift after a warm start"); off (--no-freeze-obs-norm): they keep updating"""
    clamp_obs: bool = False
    """clip each observation feature to the range of the raw values its normalisation statistics were fitted on,
    before normalising (agents.obs_support): a device unlike any in training (the held-out laptop) reads as the
    nearest one seen instead of reaching the network at the ±10 σ clip through untrained weights; saved as
    vecnormalize.npz obs_min / obs_max and exported to the policy file; off: VecNormalize alone, as before"""
    obs_drop: str = "power_w"
    """comma-separated observation features the policy never reads: held at 0 before normalising (implies
    --clamp-obs; the file's obs_min = obs_max = 0 holds them on the device too). With --env.power-cap, e.g.
    "power_w,affordable_power_w": the power block says the same relative to the device, and the watts that put a
    laptop 14-27 σ outside every phone are gone from the policy's view (the hand-written rules still read them).
    "echo" stands for every feature that echoes the previous action (the configuration block, the last step's
    latency and draw: runtime.observation.ObsLayout.echo), which a clone of a rarely switching expert learns to copy
    (docs/agents.md, "The policy that copies its own last choice"). Default: power_w (with MAIN_JOB_ENV's power
    block); empty: the policy reads every feature"""
    checkpoint_freq: int = 250_000
    """environment steps between checkpoints"""
    runs_dir: str = "runs"
    """parent folder of run folders"""
    threads: int = 1
    """torch threads (one is fastest for these small networks)"""
    final_eval: bool = True
    """evaluate against the baselines on the test split at the end and print the table"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        """Every numeric argument in its range (a ValueError naming the flag: a usage error on the
        command line, exit 2, before anything is built)."""
        if self.algo not in ALGOS:
            raise ValueError(f"argument --algo: {self.algo!r} is not an algorithm; choose one of {', '.join(ALGOS)}")
        if not self.exp_name or self.exp_name in (".", "..") or any(c in self.exp_name for c in "/\\"):
            raise ValueError(f"argument --exp-name: {self.exp_name!r} must be a non-empty name without path "
                             "separators (it is part of the run folder's name)")
        if not self.runs_dir:
            raise ValueError("argument --runs-dir: must be a non-empty folder path")
        t = self.total_timesteps
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
                t == -1 or (math.isfinite(t) and t >= 0 and float(t).is_integer())):
            shown = f"{t:g}" if isinstance(t, (int, float)) else repr(t)
            raise ValueError(f"argument --total-timesteps: {shown} is out of range; allowed: -1 (the YAML's "
                             "n_timesteps, or WARM_START_TIMESTEPS after a warm start) or a whole number of steps "
                             ">= 0 (e.g. 2e6)")
        for name, parse in _RANGES.items():
            check_value(f"--{name.replace('_', '-')}", getattr(self, name), parse)
        if self.action_head not in ("auto", "flat", "factorised", "joint", "hybrid"):
            raise ValueError(f"argument --action-head: {self.action_head!r}; choose auto, flat, factorised, joint or "
                             "hybrid")
        if self.shape_potential not in ("deficit", "dual"):  # agents.shaping.POTENTIALS (not imported here: torch-free)
            raise ValueError(f"argument --shape-potential: {self.shape_potential!r}; choose deficit or dual")
        if 0 < self.train_death_weight < self.env.weights.death:
            raise ValueError(f"argument --train-death-weight: {self.train_death_weight:g} is below the env's death "
                             f"weight ({self.env.weights.death:g}); allowed: 0 (off) or >= it")
        if self.bc_expert == "none":
            self.bc_expert = ""
        if self.action_head == "auto":  # resolved here, so the run folder records the head it trained
            self.action_head = "factorised" if self.algo in FACTORISED_ALGOS and not self.bc_expert else "flat"
        if self.action_head == "factorised" and self.algo not in FACTORISED_ALGOS:
            raise ValueError(f"argument --action-head: factorised needs a MultiDiscrete-capable actor-critic, not "
                             f"{self.algo}; choose --algo maskable_ppo or ppo")
        if self.action_head in ("joint", "hybrid") and self.algo not in FACTORISED_ALGOS:
            raise ValueError(f"argument --action-head: {self.action_head} needs an actor-critic with an action net, "
                             f"not {self.algo}; choose --algo maskable_ppo or ppo")
        if self.bc_oracle_grid:
            from agents.evaluate import _oracle_grid

            try:
                _oracle_grid(self.bc_oracle_grid)
            except Exception as exc:
                raise ValueError(f"argument --bc-oracle-grid: {exc}") from None
        if self.workers > 1:
            from agents.parallel import INSTALL_HINT, ray_available

            if not ray_available():
                raise ValueError(f"argument --workers: {self.workers} needs Ray, which is not installed; fix: "
                                 f"{INSTALL_HINT} or --workers 1")


_RANGES = {  # Args field -> argparse range type (model.cli); messages name the flag and the range
    "seed": int_in(0, 2**32 - 1),
    "n_envs": nonneg_int,  # 0: the YAML's
    "learning_rate": nonneg_float,  # 0: the YAML's
    "gamma": float_in(0.0, 0.9999),  # 0: the YAML's
    "bc_episodes": positive_int,
    "dagger_rounds": nonneg_int,
    "dagger_episodes": positive_int,
    "dagger_beta": float_in(0.0, 1.0),
    "bc_drawn_masks": float_in(0.0, 1.0),
    "bc_raised_floors": float_in(0.0, 1.0),
    "bc_raised_budgets": float_in(0.0, 1.0),
    "bc_borrowed_states": float_in(0.0, 1.0),
    "bc_epochs": positive_int,
    "bc_lr": positive_float,
    "bc_explore": float_in(0.0, 0.99),
    "clone_kl": nonneg_float,
    "critic_warmup": nonneg_float,
    "shape_energy": nonneg_float,
    "train_death_weight": nonneg_float,
    "cost_limit": nonneg_float,
    "lagrange_lr": nonneg_float,
    "speed_sigma": nonneg_float,
    "low_soc_frac": float_in(0.0, 1.0),
    "capacity_sigma": nonneg_float,
    "hot_frac": float_in(0.0, 1.0),
    "eval_freq": positive_int,
    "eval_episodes": positive_int,
    "val_hot_episodes": nonneg_int,
    "val_low_soc_episodes": nonneg_int,
    "checkpoint_freq": positive_int,
    "threads": positive_int,
    "workers": positive_int,
}


class TraceSplitError(ValueError):
    """A split the run needs has no traces (raised before anything is built)."""


class LagrangianCost(VecEnvWrapper):
    """r ← r − λ·cost, where cost counts violated constraints this step (``BatchedPowerEnv.last_cost``)."""

    def __init__(self, venv, lam: float = 0.0):
        super().__init__(venv)
        self.lam = lam
        self.cost_sum, self.cost_n = 0.0, 0

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rew, done, infos = self.venv.step_wait()
        cost = self.venv.unwrapped.last_cost
        self.cost_sum += float(cost.sum())
        self.cost_n += cost.size
        return obs, rew - self.lam * cost.astype(np.float32), done, infos


class PassThrough(VecEnvWrapper):
    """Does nothing; keeps the eval env's wrapper stack as deep as the training env's."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


class FixedEpisodes(gym.Wrapper):
    """Resets cycle through a fixed list of reset options; ``rewind()`` restarts the cycle."""

    def __init__(self, env, episodes: list[dict]):
        super().__init__(env)
        self.episodes, self.k = episodes, 0

    def rewind(self) -> None:
        self.k = 0

    def reset(self, *, seed=None, options=None):
        opt = self.episodes[self.k % len(self.episodes)]
        self.k += 1
        return self.env.reset(seed=seed, options=opt)


#: val environments stepped side by side in the evaluation (SB3's evaluate_policy batches their policy calls)
VAL_ENVS = 4


def val_env_params(args: Args) -> EnvParams:
    """The val env's parameters: the training env's, with the user's floor and budget held by the masks as when
    scored and deployed (``Args.val_rules``)."""
    return dataclasses.replace(args.env, floor_rule=True, budget_rule=True) if args.val_rules else args.env


def spread_val_episodes(rows: list[int], n: int, max_steps: int) -> list[dict]:
    """``n`` fixed val episodes (reset options) over val traces of ``rows`` rows each. With at least ``n``
    traces: ``n`` traces spread evenly over the split, each from row 0. With fewer: every trace, each from
    ``ceil``/``floor(n / len(rows))`` start rows spread evenly from row 0 to the last row that leaves half an
    episode (``max_steps // 2`` rows; a later start ends with the trace, shorter), so that a small val split (the
    default set's six traces) still gives ``n`` different episodes: other states of charge and temperatures on
    the way, deadlines nearer, other hours of the day. A (trace, start) pair is never repeated (a short trace
    gives fewer)."""
    n_tr = len(rows)
    if n_tr == 0 or n <= 0:
        return []
    if n <= n_tr:
        return [{"trace": int(k), "start": 0} for k in np.unique(np.linspace(0, n_tr - 1, n).round().astype(int))]
    out = []
    for k, n_rows in enumerate(rows):
        m = n // n_tr + (k < n % n_tr)
        last = max(0, n_rows - max_steps // 2)
        out += [{"trace": k, "start": int(s)} for s in np.unique(np.linspace(0, last, m).round().astype(int))]
    return out


def hot_val_episodes(episodes: list[dict], traces: list, n: int) -> list[dict]:
    """``n`` val episodes near the thermal trip point: ``n`` of ``episodes`` spread evenly over the list (every trace
    of the default val split gets its share; cycled when ``n`` is larger), each with the reset option
    ``ambient_shift_c`` set so that its trace's mean ambient lies ``m`` deg C below the device's trip point, ``m``
    spread evenly over ``envs.batched.HOT_TRIP_MARGIN_C`` (the band of ``--hot-trip``; never a negative shift: a
    trace already that hot keeps its ambient). The scalar env shifts the ambient, the start temperature and the
    masks with it."""
    if n <= 0 or not episodes:
        return []
    lo, hi = HOT_TRIP_MARGIN_C
    margins = np.linspace(lo, hi, n) if n > 1 else np.array([lo])
    picks = np.linspace(0, len(episodes) - 1, min(n, len(episodes))).round().astype(int)
    out = []
    for i, m in enumerate(margins):
        ep = episodes[int(picks[i % len(picks)])]
        tr = traces[ep["trace"]]
        shift = max(0.0, tr.device.t_max_c - float(m) - float(np.mean(tr.ambient_c)))
        out.append({**ep, "ambient_shift_c": round(shift, 3)})
    return out


def low_soc_val_episodes(episodes: list[dict], n: int, reserve_soc: float) -> list[dict]:
    """``n`` val episodes on a nearly empty battery: ``n`` of ``episodes`` spread evenly over the list (as
    :func:`hot_val_episodes` picks them), each with the reset option ``soc`` (the start charge) spread evenly over
    ``(reserve_soc, LOW_SOC_MAX]``, the band ``--low-soc-frac`` draws from."""
    if n <= 0 or not episodes:
        return []
    top = max(reserve_soc, LOW_SOC_MAX)
    socs = np.linspace(top, reserve_soc, n + 1)[:-1][::-1]  # reserve excluded: an episode that can run at all
    picks = np.linspace(0, len(episodes) - 1, min(n, len(episodes))).round().astype(int)
    return [{**episodes[int(picks[i % len(picks)])], "soc": round(float(soc), 4)} for i, soc in enumerate(socs)]


def val_objectives(episodes: list[dict], objective) -> list[dict]:
    """The val episodes with their objective fixed (reset option ``objective``) when the env draws it per episode
    (``Objective.kind == "mix"``); else ``episodes`` unchanged. Without it every evaluation would draw each episode's
    objective anew from the val env's generator, and the val return, whose objectives differ in scale (a min-energy
    episode returns about -20, a max-quality one about +100 on the real folds), would change between two evaluations
    of the same policy: ``--select-best`` would choose on the draws. Episode ``j`` gets the objective that
    ``runtime.dynamics.episode_objective`` draws for ``u = frac((j + 1) * 0.618...)`` (a golden-ratio sequence),
    so the mix's shares hold over any number of episodes, and the kinds are spread over the list, not in blocks of
    traces."""
    if objective.kind != "mix":
        return episodes
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    p = EnvParams(objective=objective)

    # episode_objective draws with one rng.random(): a stand-in generator that returns the sequence's number
    return [{**e, "objective": episode_objective(p, SimpleNamespace(random=lambda u=((j + 1) * golden) % 1.0: u),
                                                 math.nan, math.nan, 0).kind}
            for j, e in enumerate(episodes)]


def val_shares(n: int, n_envs: int) -> list[list[int]]:
    """Episode indices per val env, as SB3's ``evaluate_policy`` counts them (env ``i`` runs
    ``(n + i) // n_envs`` episodes); envs with no episode are left out."""
    n_envs = max(1, min(n_envs, n))
    counts = [(n + i) // n_envs for i in range(n_envs)]
    edges = np.cumsum([0] + counts)
    return [list(range(edges[i], edges[i + 1])) for i in range(n_envs) if counts[i]]


class KeepBest(BaseCallback):
    """``callback_on_new_best``: snapshots the policy weights and the observation statistics."""

    def __init__(self, train_env: VecNormalize):
        super().__init__()
        self.train_env = train_env
        self.state: dict | None = None
        self.rms: tuple | None = None
        self.at_step, self.val_return = 0, float("nan")

    def _on_step(self) -> bool:
        self.state = {k: v.detach().clone() for k, v in self.model.policy.state_dict().items()}
        self.rms = _rms_snapshot(self.train_env.obs_rms)
        self.at_step, self.val_return = int(self.model.num_timesteps), float(self.parent.best_mean_reward)
        return True

    def take(self, model, train_env: VecNormalize, step: int, val_return: float) -> None:
        """Snapshots ``model`` now (before learning: the imitated policy) as the candidate to beat."""
        self.state = {k: v.detach().clone() for k, v in model.policy.state_dict().items()}
        self.rms = _rms_snapshot(train_env.obs_rms)
        self.at_step, self.val_return = int(step), float(val_return)

    def restore(self) -> None:
        self.model.policy.load_state_dict(self.state)
        r = self.train_env.obs_rms
        r.mean, r.var, r.count = self.rms[:3]
        if self.rms[3] is not None:  # --clamp-obs: the support goes with the statistics
            r.lo, r.hi = self.rms[3:]


def obs_drop_mask(obs_drop: str, names: list[str], norm_obs: bool, echo: Sequence[str] = ()) -> np.ndarray | None:
    """``--obs-drop``'s features as a (obs_dim,) bool mask over the layout ``names``; None for none. ``echo`` in
    the list stands for the layout's ``echo`` features (``runtime.observation.ObsLayout.echo``). Refuses an
    unknown name (listing the layout) and a run without observation normalisation (the clamp lives there)."""
    want: list[str] = []
    for n in (n.strip() for n in obs_drop.split(",")):
        if n == "echo" and echo:
            want += list(echo)
        elif n:
            want.append(n)
    if not want:
        return None
    unknown = [n for n in want if n not in names]
    if unknown:
        raise SystemExit(f"--obs-drop {obs_drop!r}: no feature {', '.join(map(repr, unknown))} in this observation; "
                         f"it has {', '.join(names)}")
    if not norm_obs:
        raise SystemExit("--obs-drop holds features at 0 inside the observation normalisation, which these "
                         "hyperparameters turn off (normalize: false): turn it on, or drop --obs-drop")
    return np.isin(np.array(names), want)


def _rms_snapshot(r) -> tuple:
    """Copies of the observation statistics: mean, var, count and (``--clamp-obs``) the support, else None, None."""
    lo, hi = getattr(r, "lo", None), getattr(r, "hi", None)
    return (r.mean.copy(), r.var.copy(), r.count, None if lo is None else lo.copy(), None if hi is None else hi.copy())


def val_return(model, train_env: VecNormalize, eval_env: VecNormalize, n_episodes: int, masks: bool) -> float:
    """Mean return of ``model`` (deterministic, masked when it reads masks) over the fixed val episodes,
    exactly as the evaluation callback measures it."""
    from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    sync_envs_normalization(train_env, eval_env)
    eval_env.env_method("rewind")
    if masks:
        mean, _ = maskable_evaluate(model, eval_env, n_eval_episodes=n_episodes, deterministic=True)
    else:
        mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=n_episodes, deterministic=True)
    return float(mean)


def fixed_eval_callback(base_cls, eval_env, skip_until: int = 0, **kwargs):
    """``base_cls`` (SB3's EvalCallback or the maskable one) that rewinds the fixed val episodes
    before every evaluation, and evaluates nothing up to step ``skip_until`` (the critic warm-up, whose policy is
    the warm start: with ``--select-warm-start`` that is a candidate already, and without it, it is not one)."""

    class FixedEval(base_cls):
        def _on_step(self) -> bool:
            if self.num_timesteps <= skip_until:
                return True
            if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
                self.eval_env.env_method("rewind")
            return super()._on_step()

    return FixedEval(eval_env, **kwargs)


class WattwiseLogger(BaseCallback):
    """TensorBoard: reward terms, violations, quality, energy, SPS, λ; a tqdm progress bar."""

    def __init__(self, total: int, lagrangian: LagrangianCost | None, args: Args, progress: bool, shaping=None):
        super().__init__()
        self.total, self.lag, self.args, self.shaping = total, lagrangian, args, shaping
        self.bar = tqdm(total=total, unit="step", desc="train", disable=not progress)
        self.sums: dict[str, float] = {}
        self.n = 0
        self.t0 = time.time()

    def _on_training_start(self) -> None:
        hp = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
              for k, v in _flat(dataclasses.asdict(self.args)).items()}
        self.logger.record("hparams", HParam(hp, {"eval/mean_reward": 0.0, "charts/quality_per_token": 0.0}),
                           exclude=("stdout", "log", "json", "csv"))

    def _on_step(self) -> bool:
        base = self.training_env.unwrapped
        last = base.last
        for k, v in zip(TERM_NAMES, last[6:12]):
            self.sums[f"reward_terms/{k}"] = self.sums.get(f"reward_terms/{k}", 0.0) + float(np.mean(v))
        self.sums["charts/cost"] = self.sums.get("charts/cost", 0.0) + float(base.last_cost.mean())
        self.sums["charts/energy_j_per_step"] = self.sums.get("charts/energy_j_per_step", 0.0) + float(
            last.energy_j.mean())
        served = float(last.served.sum())
        self.sums["_served"] = self.sums.get("_served", 0.0) + served
        self.sums["_q"] = self.sums.get("_q", 0.0) + float((base.costs.quality[base.a] * last.served).sum())
        self.n += 1
        self.bar.update(base.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        if not self.n:
            return
        for k, v in self.sums.items():
            if not k.startswith("_"):
                self.logger.record(k, v / self.n)
        self.logger.record("charts/quality_per_token", self.sums["_q"] / max(self.sums["_served"], 1e-9))
        self.logger.record("charts/SPS", int(self.num_timesteps / (time.time() - self.t0)))
        if self.shaping is not None:  # agents.shaping: mean |gamma Phi' - Phi| per env step of this rollout
            sh = self.shaping
            self.logger.record("charts/shaping_abs_mean", sh.shaping_sum / max(sh.shaping_n, 1))
            sh.shaping_sum, sh.shaping_n = 0.0, 0
        if self.lag is not None:
            mean_cost = self.lag.cost_sum / max(self.lag.cost_n, 1)
            self.lag.lam = max(0.0, self.lag.lam + self.args.lagrange_lr * (mean_cost - self.args.cost_limit))
            self.lag.cost_sum, self.lag.cost_n = 0.0, 0
            self.logger.record("charts/lagrange_lambda", self.lag.lam)
        self.sums, self.n = {}, 0

    def _on_training_end(self) -> None:
        self.bar.close()


def _flat(d: dict, prefix: str = "") -> dict:
    """{"env": {"step_s": 10}} -> {"env.step_s": 10} (TensorBoard's hparams table is flat)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


#: RL Zoo keys train.py does not implement (it builds its own env stack, callbacks and policy); a file that sets
#: one is refused rather than silently trained differently from RL Zoo
_ZOO_UNSUPPORTED = ("env_wrapper", "vec_env_wrapper", "frame_stack", "callback", "monitor_kwargs", "env_kwargs",
                    "replay_buffer_class", "replay_buffer_kwargs", "noise_type", "noise_std", "eval_env_kwargs")
_NORMALIZE_KEYS = ("norm_obs", "norm_reward")


def hyperparams_path(name: str) -> Path:
    """``agents/hyperparams/<name>.yml``, or ``$WATTWISE_HYPERPARAMS/<name>.yml`` when that folder is set
    (``agents.sweep`` points each trial at its own copy with the swept values applied)."""
    folder = os.environ.get("WATTWISE_HYPERPARAMS") or HYPERPARAMS
    return Path(folder) / f"{name}.yml"


def load_hyperparams(name: str) -> dict:
    """The hyperparameters of algorithm ``name`` for the wattwise env, in the form ``main``/``make_agent`` use.

    The file is in RL Zoo's format, so ``python -m rl_zoo3.train --conf-file`` trains from the same file:
    ``policy`` (``MlpPolicy``), ``n_envs``, ``n_timesteps``, ``normalize`` (a bool, a mapping or RL Zoo's string
    ``"{'norm_obs': True, 'norm_reward': False}"`` / ``"dict(norm_obs=True, ...)"``), ``policy_kwargs`` (RL Zoo's
    string ``"dict(net_arch=[64, 64], activation_fn=nn.Tanh)"``, parsed with ``ast``: literals, ``dict(...)`` and
    ``nn.<Activation>`` only, never evaluated), and the algorithm's own keyword arguments.

    Returns:
        The algorithm's keyword arguments plus ``n_envs``, ``n_timesteps``, ``normalize_obs`` /
        ``normalize_reward`` (VecNormalize's flags; absent ``normalize`` = no normalisation, as in RL Zoo) and
        ``policy_kwargs`` with the activation as its ``torch.nn`` class name (JSON-serialisable, as stored in
        ``config.json``).
    """
    if name not in ALGOS:
        raise SystemExit(f"--algo {name!r}: choose one of {', '.join(ALGOS)}")
    path = hyperparams_path(name)
    try:
        hp = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: no such hyperparameter file; fix: restore agents/hyperparams/{name}.yml "
                         "or unset WATTWISE_HYPERPARAMS") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(hp, dict) or envs.ENV_ID not in hp or not isinstance(hp[envs.ENV_ID], dict):
        raise SystemExit(f"{path}: no entry for {envs.ENV_ID}; fix: key the hyperparameters by the env id, as RL Zoo "
                         "does")
    return _from_rl_zoo(dict(hp[envs.ENV_ID]), path)


def _from_rl_zoo(hp: dict, path: Path) -> dict:
    """RL Zoo's forms -> train.py's (see ``load_hyperparams``); every refusal names the file, the key and the fix."""
    def bad(key: str, why: str, fix: str) -> SystemExit:
        return SystemExit(f"{path}: {key}: {why}; fix: {fix}")

    for key in ("normalize_obs", "normalize_reward"):
        if key in hp:
            raise bad(key, "not an RL Zoo key", "write normalize: \"{'norm_obs': True, 'norm_reward': False}\"")
    for key in _ZOO_UNSUPPORTED:
        if key in hp:
            raise bad(key, "RL Zoo option not supported by train.py", "remove it (train.py builds its own env stack)")
    order = [k for k in hp if k != "policy"] + ([] if "normalize" in hp else ["normalize"])
    policy = hp.pop("policy", "MlpPolicy")
    if policy != "MlpPolicy":
        raise bad("policy", f"{policy!r}; train.py builds MlpPolicy only", "policy: 'MlpPolicy'")
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        if isinstance(hp.get(key), str) and linear_start(hp[key]) is None:
            raise bad(key, f"{hp[key]!r} is neither a number nor RL Zoo's linear schedule",
                      "give a number (3.0e-4) or lin_<start> (lin_3.0e-4: from the start down to 0 at the last step)")
    for key in ("n_envs", "n_timesteps"):
        if key in hp:
            try:
                v = float(hp[key])
            except (TypeError, ValueError):
                v = float("nan")
            if not (math.isfinite(v) and v.is_integer() and v >= 1):
                raise bad(key, f"{hp[key]!r} is not a whole number >= 1", f"e.g. {key}: !!float 1e6")
            hp[key] = int(v) if key == "n_envs" else hp[key]
    norm = hp.pop("normalize", False)
    if isinstance(norm, str):
        norm = _literal(norm, path, "normalize")
    if isinstance(norm, bool):  # RL Zoo: true = VecNormalize's defaults (both on)
        norm = dict.fromkeys(_NORMALIZE_KEYS, norm)
    if not (isinstance(norm, dict) and set(norm) <= set(_NORMALIZE_KEYS)
            and all(isinstance(v, bool) for v in norm.values())):
        raise bad("normalize", f"{norm!r}", "true, false or \"{'norm_obs': True, 'norm_reward': False}\" "
                  "(train.py sets VecNormalize's norm_obs and norm_reward only)")
    flags = {k: norm.get(k, True) for k in _NORMALIZE_KEYS}  # a missing flag: VecNormalize's default (on)
    pk = hp.pop("policy_kwargs", None)
    if pk is not None:
        pk = _literal(pk, path, "policy_kwargs") if isinstance(pk, str) else pk
        if not isinstance(pk, dict):
            raise bad("policy_kwargs", f"{pk!r} is not a mapping", "\"dict(net_arch=[64, 64], activation_fn=nn.Tanh)\"")
        act = pk.get("activation_fn")
        if act is not None and not isinstance(act, _Activation):
            raise bad("policy_kwargs", f"activation_fn {act!r} is not nn.<Activation>",
                      "write it as RL Zoo does: activation_fn=nn.Tanh (inside the quoted string)")
        others = [k for k, v in pk.items() if k != "activation_fn" and "_Activation(" in repr(v)]
        if others:
            raise bad("policy_kwargs", f"{others[0]} names a torch.nn class; train.py resolves activation_fn only",
                      "remove it, or train with RL Zoo")
        pk = {k: (v.name if isinstance(v, _Activation) else v) for k, v in pk.items()}
        hp["policy_kwargs"] = pk
    out = {}  # the file's key order, normalize in its place (config.json lists them as before)
    for k in order:
        if k == "normalize":
            out["normalize_obs"], out["normalize_reward"] = flags["norm_obs"], flags["norm_reward"]
        else:
            out[k] = hp[k]
    return out


@dataclass(frozen=True)
class _Activation:
    """``nn.Tanh`` in a ``policy_kwargs`` string: the ``torch.nn`` class name (resolved in ``make_agent``)."""

    name: str


def _literal(text: str, path: Path, key: str):
    """RL Zoo's Python-literal string (``"dict(a=1, b=[2, 3])"``, ``"{'a': True}"``, ``nn.Tanh``) as a value,
    walking the ``ast`` (nothing is evaluated): literals, lists, tuples, dicts, ``dict(k=v, ...)`` and
    ``nn.X`` / ``th.nn.X`` / ``torch.nn.X`` for a ``torch.nn`` module class."""
    import ast

    def conv(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return -conv(node.operand)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [conv(e) for e in node.elts]
        if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            return {conv(k): conv(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
                and not node.args and all(kw.arg for kw in node.keywords):
            return {kw.arg: conv(kw.value) for kw in node.keywords}
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("nn", "th.nn", "torch.nn"):
            cls = getattr(torch.nn, node.attr, None)
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
                return _Activation(node.attr)
        raise SystemExit(f"{path}: {key}: {ast.unparse(node)!r} is not allowed in {text!r}; fix: use literals, "
                         "dict(...) and nn.<Activation> only (the string is parsed, never evaluated)")

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise SystemExit(f"{path}: {key}: {text!r} is not a Python literal ({exc.msg}); fix: e.g. "
                         "\"dict(net_arch=[64, 64], activation_fn=nn.Tanh)\"") from None
    return conv(tree.body)


def linear_start(value) -> float | None:
    """The start of RL Zoo's linear schedule ``lin_<start>`` (a positive finite number; None: not one)."""
    if not (isinstance(value, str) and value.startswith("lin_")):
        return None
    try:
        v = float(value[4:])
    except ValueError:
        return None
    return v if math.isfinite(v) and v > 0 else None


class NpzCheckpoint(CheckpointCallback):
    """SB3's checkpoints (``model_<steps>_steps.zip``) with the observation statistics they were trained on beside
    each, as ``model_vecnormalize_<steps>_steps.npz`` (plain arrays, ``agents.run_io.save_vecnormalize``; SB3's own
    ``save_vecnormalize`` pickles): without them a checkpoint's inputs cannot be normalised as in training."""

    def __init__(self, **kw):
        super().__init__(save_vecnormalize=False, **kw)

    def _on_step(self) -> bool:
        from agents.run_io import save_vecnormalize

        ok = super()._on_step()
        vn = self.model.get_vec_normalize_env()
        if self.n_calls % self.save_freq == 0 and vn is not None:
            save_vecnormalize(vn, self._checkpoint_path("vecnormalize_", extension="npz"))
        return ok


def make_agent(name: str, env, hp: dict, seed: int, tb_dir: str | None, clone_kl: float = 0.0):
    """The SB3 agent of ``name`` (``agents.algos.ALGOS``) on ``env``; ``lin_<start>`` values become SB3's
    ``LinearSchedule`` from the start to 0 over the run (RL Zoo's ``linear_schedule``). ``clone_kl`` > 0:
    ``agents.clone_kl.CloneKLMaskablePPO`` (maskable_ppo only; its anchor is set after the warm start)."""
    from stable_baselines3.common.utils import LinearSchedule

    a = algo(name)
    starts = {k: linear_start(v) for k, v in hp.items()}
    hp = {k: v if starts[k] is None else LinearSchedule(starts[k], 0.0, 1.0) for k, v in hp.items()}
    pk = dict(hp.pop("policy_kwargs", {}))
    pk["activation_fn"] = getattr(torch.nn, pk.get("activation_fn", a.activation))  # SB3's default per algo
    cls, extra = a.agent_class(), {}
    if clone_kl > 0:
        from agents.clone_kl import CloneKLMaskablePPO

        cls, extra = CloneKLMaskablePPO, {"clone_kl": clone_kl}
    model = cls("MlpPolicy", env, **hp, policy_kwargs=pk, seed=seed, verbose=0, tensorboard_log=tb_dir, device="cpu",
                **extra)
    if tb_dir is None:  # SB3 would log to a fresh empty SB3-<date> folder in the temp dir on every learn()
        from stable_baselines3.common.logger import Logger

        model.set_logger(Logger(None, []))
    return model


def warm_start(args: Args, model, train_env: VecNormalize, env_kwargs: dict, tb_dir: str) -> dict:
    """Behaviour cloning from ``args.bc_expert`` (+ DAgger rounds) on the train split
    (``agents.imitation``); sets the normalisation statistics from the demonstrations."""
    import gymnasium as gym
    from stable_baselines3.common.logger import configure

    from agents.imitation import (
        Demonstrations,
        DemoRandomisation,
        cheapest_labels,
        collect,
        fit_normalisation,
        pretrain,
        student_fn,
    )
    from agents.registry import ORACLES
    # the demonstrations' episodes are the RL episodes' length, and an oracle expert plans that far
    env = gym.make(envs.ENV_ID, split="train", params=args.env, max_episode_steps=args.env.max_episode_steps,
                   **env_kwargs)
    logger = configure(str(Path(tb_dir) / "pretrain"), ["tensorboard"])
    expert_kwargs = {}
    if args.bc_expert in ORACLES:
        expert_kwargs["horizon_steps"] = int(args.env.max_episode_steps)
        if args.bc_oracle_grid:
            from agents.evaluate import _oracle_grid

            expert_kwargs.update(zip(("n_soc", "n_temp", "n_backlog"), _oracle_grid(args.bc_oracle_grid)))
    randomise = (DemoRandomisation(args.low_soc_frac, args.capacity_sigma, args.env.reserve_soc, args.hot_frac)
                 if args.demo_dr else None)
    if args.bc_demos and args.demo_dr:
        print(f"note: --bc-demos {args.bc_demos}: the demonstrations are loaded as they were collected; --demo-dr "
              "applies only to demonstrations collected now")
    elif randomise and args.speed_sigma > 0:
        print("note: --demo-dr does not randomise the demonstrations' host speed; --speed-sigma applies to RL only")
    if args.bc_demos:
        try:
            demos = Demonstrations.load(args.bc_demos, args.bc_expert, env.observation_space.shape[0],
                                        int(env.action_space.n))
        except ValueError as exc:
            raise SystemExit(f"--bc-demos {exc}") from None
    else:
        demos = collect(env, args.bc_expert, args.bc_episodes, seed=args.seed, max_steps=args.env.max_episode_steps,
                        progress=args.progress, desc=f"demos ({args.bc_expert})", workers=args.workers,
                        expert_kwargs=expert_kwargs, randomise=randomise)
    fit_normalisation(train_env, demos, float(model.gamma))
    relabelled = []

    def told(d: Demonstrations) -> Demonstrations:
        """What the student fits: the expert's labels, or min-energy's cheapest (--bc-min-energy-labels)."""
        if args.bc_min_energy_labels != "cheapest":
            return d
        d, changed = cheapest_labels(d, env.unwrapped.costs, env.unwrapped.feature_names, args.env.objective.kind,
                                     drawn_share=args.bc_drawn_masks, rng=np.random.default_rng([args.seed, len(d)]),
                                     raised_share=args.bc_raised_floors, raised_budget_share=args.bc_raised_budgets,
                                     step_s=env.unwrapped.step_s, grace_s=env.unwrapped.params.budget_grace_s,
                                     borrowed_share=args.bc_borrowed_states)
        relabelled.append(changed)
        return d
    fac = None
    if args.action_head == "factorised":
        from runtime.factorised import Factorisation

        fac = Factorisation(env.unwrapped.space)
    fit = dict(epochs=args.bc_epochs, lr=args.bc_lr, seed=args.seed, logger=logger, progress=args.progress,
               factorisation=fac)
    stats = pretrain(model, train_env, told(demos), **fit)
    rounds = [dict(stats, transitions=len(demos), expert_return=demos.expert_return, seconds=demos.seconds)]
    for r in range(args.dagger_rounds):
        more = collect(env, args.bc_expert, args.dagger_episodes, seed=args.seed + 1000 * (r + 1),
                       student=student_fn(model, train_env, fac), beta=args.dagger_beta,
                       max_steps=args.env.max_episode_steps, progress=args.progress, desc=f"DAgger {r + 1}",
                       workers=args.workers, expert_kwargs=expert_kwargs, randomise=randomise)
        demos = demos.extend(more)
        if hasattr(train_env.obs_rms, "set_support"):  # --clamp-obs: the range the network is now fitted on
            train_env.obs_rms.set_support(demos.obs)
        stats = pretrain(model, train_env, told(demos), **fit)
        rounds.append(dict(stats, transitions=len(demos), seconds=more.seconds))
    tempered = None
    if args.bc_explore > 0:
        from agents.imitation import temper_to_explore

        tempered = temper_to_explore(model, train_env, told(demos), args.bc_explore, fac, seed=args.seed)
        print(f"warm start tempered (--bc-explore {args.bc_explore:g}): temperature {tempered['temperature']:.3g}, "
              f"the stochastic policy takes its deterministic action with probability "
              f"{tempered['chosen_prob_before']:.4f} -> {tempered['chosen_prob_after']:.4f} (demonstration states)")
    out = Path(tb_dir).parent / "warm_start"
    out.mkdir(parents=True, exist_ok=True)
    demos.save(out / "demos.npz", args.bc_expert)
    for i, rd in enumerate(rounds):
        source = (f"loaded from {args.bc_demos}" if i == 0 and args.bc_demos  # collected by an earlier run
                  else f"{rd['seconds']:.0f} s collecting")
        print(f"warm start {'BC' if i == 0 else f'DAgger {i}'}: {rd['transitions']} transitions, "
              f"accuracy {rd['bc_accuracy']:.3f}, value loss {rd['value_loss']:.3f} ({source})")
    if relabelled:
        drawn = "".join(f", {v:g} of them {what}" for v, what in ((args.bc_drawn_masks, "under drawn masks"),
                                                                  (args.bc_raised_floors, "with raised floors"),
                                                                  (args.bc_raised_budgets, "with raised budgets"),
                                                                  (args.bc_borrowed_states, "with borrowed states"))
                        if v)
        print(f"warm start: min-energy steps told the cheapest configuration the masks allow "
              f"(--bc-min-energy-labels cheapest{drawn}): {relabelled[-1]} of {len(demos)} labels differ from the "
              "expert's")
    return {"expert": args.bc_expert, "rounds": rounds, "demos_from": args.bc_demos or None,
            "randomised": dataclasses.asdict(randomise) if randomise else None, "tempered": tempered,
            "min_energy_labels": args.bc_min_energy_labels, "drawn_masks": args.bc_drawn_masks,
            "raised_floors": args.bc_raised_floors, "raised_budgets": args.bc_raised_budgets,
            "borrowed_states": args.bc_borrowed_states,
            "relabelled": relabelled[-1] if relabelled else 0}


#: what a restored warm start must share with the run that continues it (config.json keys)
WARM_START_RECIPE = ("algo", "action_head", "env_params", "obs_features", "config_space", "policy_kwargs",
                     "decode_table")


def restore_warm_start(src: Path, model, train_env, config: dict) -> dict:
    """``--warm-start-from``: the imitated policy an earlier run saved in ``src`` (``<run>/warm_start``), restored
    as ``warm_start`` left it: the policy's weights, the observation statistics (``vecnormalize.npz``) and the
    reward-scale statistic, which ``agents.imitation.fit_normalisation`` took from the first round's demonstrations
    (the first ``rounds[0].transitions`` of ``demos.npz``). Refuses a warm start of another recipe."""
    import torch

    from agents.imitation import Demonstrations, fit_reward_scale
    from agents.run_io import load_config, load_vecnormalize

    saved = load_config(src)
    ws = saved.get("warm_start") or {}
    if not ws.get("rounds") or saved.get("total_timesteps") != 0:
        raise SystemExit(f"--warm-start-from {src}: not a warm start (its config.json has no warm_start rounds, or "
                         "it trained RL steps); fix: pass <run>/warm_start of a --bc-expert run")
    here = json.loads(json.dumps({k: config.get(k) for k in WARM_START_RECIPE}, default=str))
    differ = [k for k in WARM_START_RECIPE if saved.get(k) != here[k]]
    if differ:
        raise SystemExit(f"--warm-start-from {src}: its {', '.join(differ)} differ from this run's; fix: pass the "
                         f"recipe flags it was trained with (its config.json \"args\") or another warm start")
    if (saved.get("profile") or {}).get("sha256") != config["profile"]["sha256"]:
        raise SystemExit(f"--warm-start-from {src}: trained on another cost profile "
                         f"({(saved.get('profile') or {}).get('path')}); fix: pass --profile of that run")
    state = torch.load(src / "policy_state.pt", weights_only=True, map_location="cpu")
    model.policy.load_state_dict(state)
    stats = load_vecnormalize(src / "vecnormalize.npz")
    if train_env.norm_obs:
        if stats is None or not bool(stats["norm_obs"]):
            raise SystemExit(f"--warm-start-from {src}: its vecnormalize.npz holds no observation statistics")
        rms = train_env.obs_rms
        rms.mean, rms.var, rms.count = stats["mean"].copy(), stats["var"].copy(), float(stats["count"])
        if "obs_min" in stats and hasattr(rms, "lo"):  # --clamp-obs: the support the network was fitted on
            rms.lo, rms.hi = stats["obs_min"].copy(), stats["obs_max"].copy()
    if train_env.norm_reward:  # a warm start restored in its turn keeps no demonstrations: its source's
        path = src / "demos.npz"
        if not path.is_file():
            path = Path(ws.get("restored_from") or src) / "demos.npz"
        if not path.is_file():
            raise SystemExit(f"--warm-start-from {src}: no demos.npz there (nor where it was restored from), which "
                             f"the reward scale is taken from; fix: pass the warm_start/ folder of the run that "
                             f"collected them")
        first = Demonstrations.load(path).head(int(ws["rounds"][0]["transitions"]))
        fit_reward_scale(train_env, first, float(model.gamma))
    then = ws.get("val_return")  # written to the run's config.json after warm_start/ was saved
    parent = src.resolve().parent  # <run>/warm_start, or a link to one
    if then is None and (parent / "config.json").is_file():
        then = (json.loads((parent / "config.json").read_text()).get("warm_start") or {}).get("val_return")
    print(f"warm start restored from {src} ({ws.get('expert')}, {ws['rounds'][-1]['transitions']} transitions"
          + (f"; its val return then: {then:.2f})" if then is not None else ")"))
    return {**{k: v for k, v in ws.items() if k != "val_return"}, "restored_from": str(src), "val_return_then": then}


def check_warm_start_args(args: Args) -> None:
    """Fails fast, before anything is built, on warm-start arguments that cannot work."""
    from agents.registry import ALL_CONTROLLERS

    if args.bc_expert not in ALL_CONTROLLERS:
        raise SystemExit(f"--bc-expert {args.bc_expert!r}: choose one of {', '.join(ALL_CONTROLLERS)}, "
                         "or none (from scratch)")
    if args.bc_min_energy_labels not in ("expert", "cheapest"):
        raise SystemExit(f"--bc-min-energy-labels {args.bc_min_energy_labels!r}: choose expert (the expert's own "
                         "labels) or cheapest (the cheapest configuration the masks allow on min-energy steps)")
    if args.bc_min_energy_labels == "cheapest" and args.env.objective.kind not in ("mix", "min-energy"):
        raise SystemExit(f"--bc-min-energy-labels cheapest: the objective is {args.env.objective.kind}, so no step "
                         "is a min-energy one; fix: add --env.objective.kind mix (or min-energy), or drop the flag")
    for flag, share in (("--bc-drawn-masks", args.bc_drawn_masks), ("--bc-raised-floors", args.bc_raised_floors),
                        ("--bc-raised-budgets", args.bc_raised_budgets),
                        ("--bc-borrowed-states", args.bc_borrowed_states)):
        if share > 0 and args.bc_min_energy_labels != "cheapest":
            raise SystemExit(f"{flag} varies the cheapest labels' steps: it needs --bc-min-energy-labels cheapest")
    if not algo(args.algo).actor_critic:
        raise SystemExit(f"--bc-expert needs an actor-critic (--algo maskable_ppo or ppo), not {args.algo}")
    if args.clone_kl > 0 and args.algo != "maskable_ppo":
        raise SystemExit(f"--clone-kl needs --algo maskable_ppo (agents.clone_kl extends its update), not {args.algo}")
    if args.demo_dr and args.hot_trip and not args.bc_demos:
        raise SystemExit("--demo-dr (on by default) with --hot-trip: the demonstrations draw the blind ambient shift "
                         "only; fix: add --no-demo-dr, or drop --hot-trip")
    if args.warm_start_from:
        src = Path(args.warm_start_from)
        need = ["config.json", "policy_state.pt", "vecnormalize.npz"]
        missing = [n for n in need if not (src / n).is_file()]
        if missing:
            raise SystemExit(f"--warm-start-from {src}: no {', '.join(missing)} there; fix: pass the warm_start/ "
                             "folder of an earlier --bc-expert run (<run>/warm_start)")
        if args.bc_demos:
            raise SystemExit("--warm-start-from restores an imitated policy, --bc-demos fits one: pass one of them")
    if args.bc_demos and not Path(args.bc_demos).is_file():
        raise SystemExit(f"--bc-demos {args.bc_demos}: no such file; fix: pass a <run>/warm_start/demos.npz "
                         "written by an earlier --bc-expert run, or omit --bc-demos to collect new ones")
    if args.bc_demos:  # its contents and expert, before a run folder exists (the shapes are checked on the env)
        from agents.imitation import Demonstrations

        try:
            Demonstrations.load(args.bc_demos, args.bc_expert)
        except ValueError as exc:
            raise SystemExit(f"--bc-demos {exc}") from None


def check_splits(args: Args) -> None:
    """The splits the run needs (train, val; test when ``final_eval``) hold traces: read from the
    trace set's manifest only, before anything is built or trained."""
    import traces as T

    src = args.traces if args.traces is not None else T.default_trace_set_dir()
    ts = T.TraceSet.load(src)
    for split in ("train", "val") + (("test",) if args.final_eval else ()):
        if not any(e.split == split for e in ts.entries):
            why = {"train": "training", "val": "selecting the best policy (--eval-freq)",
                   "test": "the final evaluation (or pass --no-final-eval)"}[split]
            raise TraceSplitError(f"trace set {src}: the {split!r} split has no traces; it is needed for {why}. "
                                  "Fix: assign units to that split (python -m traces.generate / traces.build_real) "
                                  "or choose another --traces")


def _remove_if_empty(folder: Path) -> None:
    """A failed start leaves no empty run folder behind (a folder with files in it is kept)."""
    try:
        folder.rmdir()  # only succeeds when empty
    except OSError:
        pass


def main(args: Args) -> Path:
    if args.hot_trip and not args.hot_frac > 0:
        raise SystemExit("--hot-trip places the hot episodes of --hot-frac, which is 0: add e.g. --hot-frac 0.3, or "
                         "drop --hot-trip")
    if args.bc_expert:
        check_warm_start_args(args)
    elif args.warm_start_from:
        raise SystemExit(f"--warm-start-from {args.warm_start_from}: the RL step after a warm start needs --bc-expert "
                         "(the default, oracle-masked); drop --bc-expert none")
    elif args.clone_kl > 0:
        raise SystemExit("--clone-kl keeps RL near an imitated policy: it needs --bc-expert (e.g. schedutil)")
    elif (args.bc_min_energy_labels != "expert" or args.bc_drawn_masks > 0 or args.bc_raised_floors > 0
          or args.bc_raised_budgets > 0 or args.bc_borrowed_states > 0):
        raise SystemExit("--bc-min-energy-labels (and --bc-drawn-masks, --bc-raised-floors, --bc-raised-budgets, "
                         "--bc-borrowed-states) relabel the imitation's "
                         "demonstrations: they need --bc-expert (e.g. oracle-masked)")
    elif args.bc_explore > 0:
        raise SystemExit("--bc-explore tempers an imitated policy: it needs --bc-expert (e.g. schedutil)")
    elif args.critic_warmup > 0:
        raise SystemExit("--critic-warmup holds an imitated actor while the critic learns its returns: it needs "
                         "--bc-expert (e.g. schedutil)")
    check_splits(args)
    # ---- seed -----------------------------------------------------------------------------
    torch.set_num_threads(args.threads)
    set_random_seed(args.seed)
    hp = load_hyperparams(args.algo)
    n_envs = args.n_envs or int(hp.pop("n_envs"))
    hp.pop("n_envs", None)
    yaml_steps = hp.pop("n_timesteps", None)  # read only when --total-timesteps -1 asks for it
    total = int(args.total_timesteps if args.total_timesteps >= 0
                else WARM_START_TIMESTEPS if args.bc_expert else float(yaml_steps))
    norm_obs, norm_rew = bool(hp.pop("normalize_obs", True)), bool(hp.pop("normalize_reward", False))
    if args.learning_rate > 0 or args.bc_expert:
        hp["learning_rate"] = args.learning_rate or WARM_START_LR
    if args.gamma > 0:
        hp["gamma"] = args.gamma

    # ---- profile + traces -> env (everything that can fail on bad input, before the run folder) ----
    env_kwargs = {"profile": args.profile, "traces": args.traces}
    draws = dict(speed_sigma=args.speed_sigma, low_soc_frac=args.low_soc_frac, capacity_sigma=args.capacity_sigma,
                 hot_frac=args.hot_frac)
    if not args.rl_dr:  # the RL episodes as recorded (the demonstrations keep --demo-dr's randomisation)
        if any(draws.values()) and not (args.bc_expert and args.demo_dr):
            print("note: --no-rl-dr without a warm start under --demo-dr: --low-soc-frac, --capacity-sigma, "
                  "--hot-frac and --speed-sigma randomise nothing in this run")
        draws = dict.fromkeys(draws, 0.0)
    venv = BatchedPowerEnv(n_envs=n_envs, split="train", seed=args.seed, params=args.env, **draws,
                           hot_trip=args.hot_trip and args.rl_dr, **env_kwargs)
    ref_env: MicroLLMPowerEnv = venv.ref
    factorised = args.action_head == "factorised"
    if factorised:  # one categorical per knob family (agents.factorised)
        from agents.factorised import FactorisedEnv, FactorisedVecEnv

        train_env = VecMonitor(FactorisedVecEnv(venv))
    else:
        train_env = VecMonitor(venv)
    shaping = None
    if args.shape_energy > 0:  # outside VecMonitor: the logged episode returns stay the env's own
        from agents.shaping import EnergyShaping

        train_env = shaping = EnergyShaping(train_env, args.shape_energy, hp.get("gamma", 0.99),
                                                   potential=args.shape_potential)
        print(f"reward shaping (--shape-energy {args.shape_energy:g}, potential {args.shape_potential}): "
              + (f"{shaping.price_per_j:.3g} reward per J saved in a deficit ({args.shape_energy:g} x the profile's "
                 f"{shaping.kappa:.3g})" if args.shape_potential == "deficit" else
                 f"{args.shape_energy:g} x the dual value of the remaining energy budget"))
    death_w = None
    if args.train_death_weight > 0:  # outside VecMonitor, as the shaping: logged returns keep the env's weight
        from agents.shaping import DeathWeight

        train_env = death_w = DeathWeight(train_env, args.train_death_weight, args.env.weights.death)
        print(f"training death weight {args.train_death_weight:g} (the env's {args.env.weights.death:g}: val and "
              "scores keep it)")
    lag = LagrangianCost(train_env) if args.lagrangian else None
    pinned = obs_drop_mask(args.obs_drop, ref_env.layout.names, norm_obs, ref_env.layout.echo)
    train_env = SupportVecNormalize(lag or train_env, norm_obs=norm_obs, norm_reward=norm_rew,
                                    gamma=hp.get("gamma", 0.99), clamp_obs=args.clamp_obs or pinned is not None,
                                    pinned=pinned)

    import traces as T

    # the val split read from disk once, shared by every val env (a real-data split takes seconds to read)
    val_traces = T.TraceSet.load(args.traces if args.traces is not None else T.default_trace_set_dir()).split("val")

    val_params = val_env_params(args)

    def val_env():
        env = gym.make(envs.ENV_ID, split="val", max_episode_steps=args.env.max_episode_steps, params=val_params,
                       profile=args.profile, traces=val_traces)
        return FactorisedEnv(env) if factorised else env

    first = val_env()
    val_episodes = spread_val_episodes([t.n for t in first.unwrapped.traces], args.eval_episodes,
                                       args.env.max_episode_steps)
    base_val = list(val_episodes)
    val_episodes += hot_val_episodes(base_val, first.unwrapped.traces, args.val_hot_episodes)
    val_episodes += low_soc_val_episodes(base_val, args.val_low_soc_episodes, args.env.reserve_soc)
    val_episodes = val_objectives(val_episodes, args.env.objective)  # the same objective at every evaluation
    shares = val_shares(len(val_episodes), VAL_ENVS)
    val_envs = [first] + [val_env() for _ in shares[1:]]
    # a few val envs side by side: one batched policy forward per step for all of them (SB3's evaluate_policy
    # gives env i the i-th share of the episodes, val_shares splits them the same way)
    eval_inner = VecMonitor(DummyVecEnv([lambda e=e, idx=idx: FixedEpisodes(e, [val_episodes[j] for j in idx])
                                         for e, idx in zip(val_envs, shares)]))
    # same wrapper depth as training: VecNormalize stats sync
    for _ in range((lag is not None) + factorised + (shaping is not None) + (death_w is not None)):
        eval_inner = PassThrough(eval_inner)
    eval_env = SupportVecNormalize(eval_inner, norm_obs=norm_obs, norm_reward=False, training=False)

    # ---- run folder: created exclusively (two runs started in the same second get two folders) ----
    run_name = f"{envs.ENV_ID.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run = exclusive_dir(args.runs_dir, run_name)
    try:
        return _train(args, run, hp, n_envs, total, norm_obs, env_kwargs, ref_env, train_env, lag, val_episodes,
                      eval_env, shaping)
    except BaseException:
        _remove_if_empty(run)
        raise


def _train(args: Args, run: Path, hp: dict, n_envs: int, total: int, norm_obs: bool, env_kwargs: dict,
           ref_env: MicroLLMPowerEnv, train_env: VecNormalize, lag: LagrangianCost | None, val_episodes: list[dict],
           eval_env: VecNormalize, shaping=None) -> Path:
    # ---- agent ------------------------------------------------------------------------------
    policy_kwargs = dict(hp.get("policy_kwargs", {}))
    model = make_agent(args.algo, train_env, dict(hp), args.seed, str(run / "tb"), clone_kl=args.clone_kl)
    if args.action_head in ("joint", "hybrid"):  # knob logits summed per configuration, masked jointly
        from agents.joint_head import install_joint_head

        install_joint_head(model, ref_env.space, residual=args.action_head == "hybrid")
    keep_best = KeepBest(train_env)
    eval_cb_cls = algo(args.algo).eval_callback_class()
    eval_cb = fixed_eval_callback(eval_cb_cls, eval_env, skip_until=int(args.critic_warmup),
                                  n_eval_episodes=len(val_episodes),
                                  eval_freq=max(1, args.eval_freq // n_envs), log_path=str(run / "eval"),
                                  deterministic=True, verbose=0, callback_on_new_best=keep_best)
    callbacks = [
        WattwiseLogger(total, lag, args, args.progress, shaping),
        eval_cb,
        NpzCheckpoint(save_freq=max(1, args.checkpoint_freq // n_envs), save_path=str(run / "checkpoints"),
                      name_prefix="model"),
    ]
    if args.critic_warmup > 0:  # the actor frozen until the critic has learnt the imitated policy's returns
        from agents.critic_warmup import CriticWarmup

        callbacks.append(CriticWarmup(int(args.critic_warmup), verbose=1))
    callbacks = CallbackList(callbacks)

    config = {
        "algo": args.algo, "env_id": envs.ENV_ID, "args": dataclasses.asdict(args),
        "env_kwargs": {**env_kwargs, "split": "train"}, "env_params": args.env.to_dict(),
        "policy_kwargs": policy_kwargs, "hyperparams": hp, "n_envs": n_envs, "total_timesteps": total,
        "action_head": args.action_head,
        "config_space": ref_env.space.to_json(), "obs_features": ref_env.layout.names,
        "obs_units": ref_env.layout.units, "decode_table": ref_env.decode_table,
        "profile": {"path": args.profile, "sha256": file_sha256(args.profile) if Path(args.profile).exists() else None},
        "host": run_host(args.threads),  # one seed trains other weights on another CPU kernel level or torch
    }

    # ---- warm start by imitation (optional) --------------------------------------------------
    if args.bc_expert:
        config["warm_start"] = (restore_warm_start(Path(args.warm_start_from), model, train_env, config)
                                if args.warm_start_from else warm_start(args, model, train_env, env_kwargs,
                                                                        str(run / "tb")))
        # the imitation-only policy, evaluable on its own: agents.evaluate --run <run>/warm_start
        save_run(run / "warm_start", model, train_env, {**config, "total_timesteps": 0})
        # the imitated policy's own val return: what the RL step has to beat; with --select-warm-start the
        # imitated policy is also a candidate, kept unless a checkpoint does better on val
        ws_val = config["warm_start"]["val_return"] = val_return(model, train_env, eval_env, len(val_episodes),
                                                                 algo(args.algo).uses_masks)
        print(f"warm start alone: mean val return {ws_val:.2f} over {len(val_episodes)} fixed val episodes")
        if args.select_best and args.select_warm_start:
            keep_best.take(model, train_env, 0, ws_val)
            eval_cb.best_mean_reward = ws_val
        if args.freeze_obs_norm and train_env.norm_obs:  # the imitated policy's inputs stay as it learnt them
            from agents.imitation import freeze_obs_normalisation

            freeze_obs_normalisation(train_env)
        if args.clone_kl > 0:  # the penalty's anchor: the imitated policy, under its normalisation statistics
            from agents.run_io import vecnormalize_stats

            model.set_anchor(vecnormalize_stats(train_env) if train_env.norm_obs else None)

    # ---- learn --------------------------------------------------------------------------------
    t0 = time.time()
    try:
        model.learn(total_timesteps=total, callback=callbacks, tb_log_name="tb")
    except KeyboardInterrupt:  # keep what was learnt: the policy so far, in <run>/interrupted
        save_run(run / "interrupted", model, train_env,
                 {**config, "selected": "interrupted", "interrupted_at_step": int(model.num_timesteps)})
        print(f"\ninterrupted at step {model.num_timesteps}; the policy so far is in {run / 'interrupted'}")
        raise
    train_s = time.time() - t0

    # ---- save -----------------------------------------------------------------------------------
    config.update(train_wall_s=train_s, lagrange_lambda=lag.lam if lag else None)
    if args.select_best and keep_best.state is not None:
        save_run(run / "last", model, train_env, {**config, "selected": "last"})
        keep_best.restore()
        ws = keep_best.at_step == 0
        config["selected"] = {"from": "warm start" if ws else "best val return", "step": keep_best.at_step,
                              "val_return": keep_best.val_return, "val_episodes": len(val_episodes)}
        what = "the warm start: no RL checkpoint beat its" if ws else f"the policy of step {keep_best.at_step}:"
        print(f"kept {what} mean val return {keep_best.val_return:.2f} over {len(val_episodes)} fixed val episodes; "
              f"the last one is in {run / 'last'}")
    save_run(run, model, train_env, config)
    print(f"trained {total} steps in {train_s / 60:.1f} min ({total / max(train_s, 1e-9):.0f} steps/s); "
          f"run folder: {run}")

    # ---- evaluate -------------------------------------------------------------------------------
    if args.final_eval:
        from agents.evaluate import main as evaluate_main

        argv = ["--run", str(run), "--split", "test", "--out", str(run), "--max-steps", str(args.env.max_episode_steps),
                "--force"]  # the report goes into this run's own (new) folder
        if args.traces:
            argv += ["--traces", args.traces]
        if not args.progress:
            argv += ["--no-progress"]
        evaluate_main(argv)
    return run


if __name__ == "__main__":
    from model.profile_schema import ProfileError
    from traces.schema import TraceValidationError

    try:
        main(parse_dataclass_args(Args, description=__doc__.split("\n\n")[0]))
    except (ProfileError, TraceValidationError, TraceSplitError, FileNotFoundError) as e:  # bad input: what, how to fix
        raise SystemExit(f"train.py: {e}") from None
