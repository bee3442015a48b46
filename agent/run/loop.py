"""The training loop: act, step, store, learn, sync; evaluation, logs, checkpoints, videos and stopping as hooks.

`run_loop` reads top to bottom on purpose: one env step per iteration, the
learner every `train_freq` env steps for `gradient_steps` updates, the target
network synced every `target_update_period` env steps, then the hooks
(agent/run/hooks.py), any of which can end the loop with a reason. It times
its own phases (`Run.phases`). `Run` holds what one training session shares:
the components, the loop's state and the run directory. Opening, resuming and
finishing a run is agent/run/trainer.py's job.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np

from agent.core.config import DQNConfig
from agent.core.schedules import chapter_episode_epsilon, linear, n_steps_schedule
from agent.dqn.agent import DQNAgent
from agent.rollout.evaluation import evaluate, evaluation_seed
from agent.run.checkpoints import CheckpointStore, Part
from agent.run.demos import load_for_run, training_transitions
from agent.run.learner import Learner
from agent.run.run_dir import RunDirectory
from agent.run.run_state import LoopState
from agent.run.signals import StopSignals
from common.errors import UserError
from envs import obs_signature
from replay import FrameReplayBuffer, ReplayBuffer, ReplayMemory, SequenceReplay

LOOP_PHASES = ("act", "env", "store", "learn", "sync", "hooks")


class TrainingStopped(RuntimeError):
    """Training ended early for a reason the user must hear (e.g. a non-finite loss)."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the run was saved where it stood (`signum` says which signal)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    episodes: int
    updates: int
    train_seconds: float  # wall-clock spent acting and learning (evaluation excluded)
    eval_seconds: float  # wall-clock spent in evaluations
    final_eval: dict | None  # None when paused (pause_at) before the end
    evaluations: list[dict] = field(default_factory=list)  # {"env_step", "mean", "std", "train_seconds"}
    solved_at: int | None = None  # env step of the first evaluation >= the solve threshold
    finished: bool = True  # False when paused before total_steps



def epsilon_schedule(cfg: DQNConfig):
    """(function, counts_episodes): the exploration rate as a function of env steps, or of episodes
    for the chapter's schedule. Schedules are pure functions of the loop's counters: nothing to save."""
    if cfg.epsilon_schedule == "linear_episodes":
        return chapter_episode_epsilon(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay), True
    return linear(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay), False


def replay_targets(reward: float, terminated: bool, truncated: bool, cfg: DQNConfig) -> tuple[float, bool]:
    """The (reward, terminal flag) stored for a transition.

    Only `terminated` stops bootstrapping: a time limit is not a terminal
    state, so a truncated step keeps bootstrapping from its real final
    observation. The chapter's preset opts into its own rules: a -10 reward
    on the last step and `done` (time limit included) as terminal.
    """
    if (terminated or truncated) and cfg.terminal_reward is not None:
        reward = cfg.terminal_reward
    return reward, bool(terminated or (truncated and cfg.truncation_as_terminal))


def make_replay(cfg: DQNConfig, obs_shape: tuple[int, ...], obs_dtype, *, frame_stacks: bool = True) -> ReplayMemory:
    """Stacked uint8 frames go to the frame memory (each frame stored once); vectors to the plain ring.

    Args:
        frame_stacks: the env's (H, W, k) uint8 observations are stacks of its
            last k frames, newest last (what `make_env` builds for Atari and
            pixels). An image env of one's own (RGB channels, say) is not: it
            goes to the plain ring, which stores each observation whole.
    """
    common = dict(seed=cfg.seed, n_steps=cfg.n_steps, gamma=cfg.gamma, prioritized=cfg.prioritized,
                  priority_alpha=cfg.priority_alpha, priority_eps=cfg.priority_eps)
    if cfg.network == "recurrent":  # sequences with their stored recurrent state (R2D2)
        frames = {}
        if len(obs_shape) == 3:  # each row one observation (frame_stack = 1: one frame); states in float16, 1.25 per stride
            frames = dict(carry_slots=cfg.replay_capacity * 5 // (4 * (cfg.sequence_length - cfg.burn_in)) + 1, carry_dtype=np.float16)
        return SequenceReplay(cfg.replay_capacity, obs_shape, obs_dtype, (2, cfg.lstm_units), sequence_length=cfg.sequence_length,
                              burn_in=cfg.burn_in, **common, **frames)
    if frame_stacks and len(obs_shape) == 3 and np.dtype(obs_dtype) == np.uint8:
        return FrameReplayBuffer(cfg.replay_capacity, frame_shape=obs_shape[:2], stack=obs_shape[2], **common)
    return ReplayBuffer(cfg.replay_capacity, obs_shape, obs_dtype, **common)


def seed_replay_with_demos(replay: ReplayMemory, cfg: DQNConfig, obs_shape: tuple[int, ...], obs_dtype, agent: DQNAgent | None = None) -> int:
    """Store recorded play (`play.py --save-demos`) in the replay before learning starts.

    Demonstrations in the replay are DQfD's second ingredient (Hester et al.
    2018): from the first update on, the learner sees where good play leads,
    which epsilon-greedy play finds only late. Each step goes in as the
    training env would have given it (`agent.demos.training_transitions`),
    through the same `replay_targets` as the agent's own steps. A sequence
    replay (the recurrent network) stores with each step the recurrent state
    `agent`'s network has there, run over the demo episode from its start, as
    acting stores its own (R2D2's stored state; burn-in refreshes it later).

    Returns:
        The number of transitions stored.

    Raises:
        UserError: a file that does not fit the run, or Atari demos without `lives`.
    """
    demos = load_for_run(cfg, obs_shape, obs_dtype)
    sequences = isinstance(replay, SequenceReplay)
    carry = agent.initial_carry(1) if sequences else None
    stored = 0
    for obs, action, reward, next_obs, terminal, truncated in training_transitions(demos, cfg):
        stored_reward, ends = replay_targets(reward, terminal, False, cfg)
        if sequences:
            _, carry_after = agent.step(obs[None], carry)
            replay.add(obs, action, stored_reward, next_obs, ends, truncated=truncated, carry=carry[0])
            carry = agent.initial_carry(1) if ends or truncated else carry_after
        else:
            replay.add(obs, action, stored_reward, next_obs, ends, truncated=truncated)
        stored += 1
    replay.open = False  # the live env's first episode starts afresh
    if stored > replay.capacity:
        print(f"warning: {cfg.demos} holds {stored:,} transitions but replay_capacity is {replay.capacity:,}; "
              "only the newest are kept", file=sys.stderr)
    print(f"put {stored:,} demonstration transitions from {cfg.demos} into the replay", file=sys.stderr)
    return stored


def build_agent(cfg: DQNConfig, env) -> DQNAgent:
    """The agent for `env`; with `init_from`, the online and target torsos start from a pretrained one."""
    obs_shape, obs_dtype, num_actions = obs_signature(env)
    if cfg.network == "recurrent":
        from agent.dqn.recurrent_agent import RecurrentDQNAgent

        agent = RecurrentDQNAgent(obs_shape, obs_dtype, num_actions, cfg, seed=cfg.seed)
    else:
        agent = DQNAgent(obs_shape, obs_dtype, num_actions, cfg, seed=cfg.seed)
    if cfg.init_from:
        from classic.errors import ClassicError
        from classic.pretrain import load_torso_weights

        try:
            load_torso_weights(agent.online, cfg.init_from)
        except ClassicError as e:
            raise UserError(f"--init-from: {e}") from None
        agent.refresh_acting_copy()
        agent.sync_target()
    return agent


@dataclass
class PhaseTimes:
    """Wall-clock seconds of this session's loop by phase.

    act: choosing actions; env: env steps and resets; store: replay writes; learn: the learner calls
    (sampling, the update and, with `overlap_learning`, waiting for the previous call: `Learner.seconds`
    splits it); sync: target syncs; hooks: evaluation, logs, checkpoints, videos (a wait for an overlapped
    learner call inside a sync or a hook counts there, not as the learner's wait). A bench reads these
    from the real loop (bench/atari_throughput.py) instead of timing a copy of it.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOOP_PHASES, 0.0))

    def add(self, phase: str, since: float) -> float:
        """Charge the time since `since` (a `perf_counter()` reading) to `phase`; returns the reading now."""
        now = time.perf_counter()
        self.seconds[phase] += now - since
        return now


@dataclass
class Run:
    """One training session: the components, the loop's state, and what the hooks share.

    `started` is the `perf_counter()` reading at which the run would have begun
    had it never stopped, so wall time counts on across resumed sessions.
    """

    cfg: DQNConfig
    directory: RunDirectory
    env: gym.Env
    eval_env: gym.Env
    agent: DQNAgent
    replay: ReplayMemory
    state: LoopState
    store: CheckpointStore
    parts: dict[str, Part]  # what a checkpoint holds (agent/run/run_state.py)
    solve_return: float | None
    learner: Learner  # the learner calls (agent/run/learner.py), in line or overlapped with acting
    started: float = 0.0  # set when the loop is about to start
    epsilon: float = 1.0  # the exploration rate of the latest env step
    signals: StopSignals | None = None  # Ctrl-C/SIGTERM while training (set by `Trainer.train`)
    phases: PhaseTimes = field(default_factory=PhaseTimes)  # where this session's wall time went (not saved)
    _out_of_time_at: tuple[int, bool] | None = None  # (env step, out of time) for `out_of_time`

    @property
    def run_dir(self) -> Path:
        return self.directory.path

    def settle(self) -> None:
        """Wait for an overlapped learner call and take in its results (`Learner.settle`): whatever reads or
        copies the online network (an evaluation, a checkpoint, a target sync, a log row) calls this first.

        Raises:
            NonFiniteLossError: the call met a non-finite loss.
        """
        self.learner.settle()

    def train_seconds(self) -> float:
        """Wall-clock seconds spent acting and learning (evaluations excluded), all sessions."""
        return time.perf_counter() - self.started - self.state.eval_seconds

    def out_of_time(self) -> bool:
        """Whether `train_minutes` is spent, decided once per env step, so that the evaluation hook (which then
        evaluates, as at the last step) and the stop hook agree even when a checkpoint in between takes seconds."""
        if self.cfg.train_minutes is None:
            return False
        if self._out_of_time_at is None or self._out_of_time_at[0] != self.state.step:
            self._out_of_time_at = (self.state.step, self.train_seconds() >= 60.0 * self.cfg.train_minutes)
        return self._out_of_time_at[1]

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Count the time inside as evaluation time, kept out of training time."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.state.eval_seconds += time.perf_counter() - t0

    def evaluate(self, episodes: int) -> dict:
        """Greedy episodes (epsilon `eval_epsilon`) on the eval env, the same seeds every time.

        Raises:
            EvaluationStopped: Ctrl-C or SIGTERM came during it.
        """
        self.settle()
        stop = (lambda: self.signals.signum is not None) if self.signals is not None else None
        return evaluate(self.agent, self.eval_env, episodes, self.cfg.eval_epsilon, seed=evaluation_seed(self.cfg.seed), stop=stop)

    def save_checkpoint(self) -> None:
        """checkpoints/step-NNNNNNNNN (written whole or not at all), then model.keras and meta.json."""
        s = self.state
        self.settle()
        if self.store.last_step == s.step:
            return  # this very state is on disk already
        s.wall_seconds = time.perf_counter() - self.started
        self.store.save(s.step, self.parts)
        self.save_model()

    def save_model(self) -> None:
        """model.keras and meta.json for the network and counters as they stand (the newest checkpoint's)."""
        s = self.state
        try:
            self.directory.save_model(self.agent.portable_model())
            self.directory.save_meta({
                "env_id": self.cfg.env_id, "obs_shape": list(self.agent.obs_shape), "obs_dtype": str(self.agent.obs_dtype),
                "num_actions": self.agent.num_actions, "env_step": s.step, "episodes": s.episodes,
                "updates": self.agent.num_updates, "checkpoint": self.store.last_name,
            })
        except OSError as e:
            raise UserError(f"cannot write model.keras/meta.json in {self.run_dir}: {e.strerror or e}; the checkpoint "
                            f"{self.store.last_name} is complete; continue with: {self.directory.resume_command()}") from None

    def result(self, final: dict | None) -> TrainResult:
        s = self.state
        return TrainResult(self.run_dir, s.step, s.episodes, self.agent.num_updates, self.train_seconds(), s.eval_seconds,
                           final, s.evaluations, s.solved_at, finished=final is not None)


class Hook(Protocol):
    """A side job called after every env step (agent/run/hooks.py): returns a reason to stop, or None to go on."""

    def __call__(self, run: Run) -> str | None: ...


def run_loop(run: Run, hooks: Sequence[Hook]) -> str:
    """Take env steps until `total_steps` or until a hook asks to stop.

    Returns:
        Why the loop ended: "end", or the first reason a hook gave ("signal", "pause", "solved", "time").
    """
    cfg, env, agent, replay, s = run.cfg, run.env, run.agent, run.replay, run.state
    epsilon_at, counts_episodes = epsilon_schedule(cfg)
    # the step size, annealed over total_steps; None keeps the optimizer's (a run without learning_rate_end never sets it)
    learning_rate_at = None if cfg.learning_rate_end is None else linear(cfg.learning_rate, cfg.learning_rate_end, cfg.total_steps)
    beta_at = linear(cfg.priority_beta_start, 1.0, cfg.total_steps)  # prioritized replay's correction, full at the end
    n_steps_at = n_steps_schedule(cfg.n_steps, cfg.n_steps_end, cfg.n_steps_decay)  # the replay sums n rewards at sample time
    phases, t = run.phases, time.perf_counter()
    for step in range(s.step + 1, cfg.total_steps + 1):  # `step` = env steps taken, this one included
        s.step = step
        # 1. act (epsilon-greedy) and step the env
        run.epsilon = epsilon_at(s.episodes if counts_episodes else step - 1)
        carry = s.carry  # a recurrent agent's state before s.obs, stored with it (None for a feed-forward agent)
        action = int(run.learner.act(s.obs[None], run.epsilon)[0])  # agent.act, on the weights of the latest learner call's start
        #                                                             (a recurrent agent's also moves s.carry past s.obs)
        t = phases.add("act", t)
        next_obs, reward, terminated, truncated, info = env.step(action)
        t = phases.add("env", t)

        # 2. store; bootstrap only through `terminated` (a time limit is not a terminal state)
        stored_reward, ends_bootstrap = replay_targets(float(reward), terminated, truncated, cfg)
        replay.add(s.obs, action, stored_reward, next_obs, ends_bootstrap, truncated=truncated, carry=None if carry is None else carry[0])
        s.obs = next_obs
        t = phases.add("store", t)
        if terminated or truncated:
            s.obs, reset_info = env.reset()
            if s.carry is not None:
                s.carry = np.zeros_like(s.carry)  # each episode starts from the zero state
            s.count_games(info, reset_info)  # real game ends: an Atari life loss ends only the training episode
            t = phases.add("env", t)

        # 3. learn every train_freq env steps, once there is enough experience: sample, update, priorities
        #    (agent/run/learner.py; with overlap_learning the update runs on while the next env steps are taken)
        if step >= cfg.learning_starts and step % cfg.train_freq == 0 and len(replay) >= cfg.batch_size:
            replay.n_steps = n_steps_at(step)
            run.learner.call(beta_at(step), None if learning_rate_at is None else learning_rate_at(step))
            t = phases.add("learn", t)

        # 4. target sync: a hard copy (Mnih et al. 2015) or a Polyak step (target_tau < 1), of the settled online network
        if cfg.target_update_period and step % cfg.target_update_period == 0:
            run.settle()
            agent.sync_target(cfg.target_tau)
            t = phases.add("sync", t)

        # 5. the hooks: evaluate, log, checkpoint, record, and whether to stop
        reasons = [reason for hook in hooks if (reason := hook(run)) is not None]
        t = phases.add("hooks", t)
        if reasons:
            run.settle()
            return reasons[0]
    run.settle()
    return "end"
