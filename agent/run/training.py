"""The training loop: act, step, store, learn, sync; evaluation, logs, checkpoints, videos and stopping as hooks.

`run_loop` reads top to bottom on purpose: one env step per iteration, the
learner every `train_freq` env steps for `gradient_steps` updates, the target
network synced every `target_update_period` env steps, then the hooks
(agent/hooks.py), any of which can end the loop with a reason. `train` opens
everything a run needs in one `ExitStack` (so it is closed on every path),
runs the loop, and ends in one place: a checkpoint of the state the run
stopped in, then the final evaluation.

Each component saves and restores itself into a checkpoint
(agent/run_state.py lists the parts), so a resume continues bit for bit where
the checkpoint was taken; Ctrl-C and SIGTERM are honoured after a whole env
step, with a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import keras
import numpy as np

from agent.run import run_dir as run_files
from agent.run.checkpoints import CheckpointStore, Part, remove_incomplete
from agent.core.config import DQNConfig, env_options
from agent.run.demos import load_for_run, training_transitions
from agent.dqn.agent import DQNAgent, NonFiniteLossError
from common.errors import CheckpointError, UserError, command
from agent.rollout.evaluation import EvaluationStopped, evaluate
from agent.run.hooks import Evaluate, Hook, Log, RecordVideos, SaveCheckpoints, StopWhen
from agent.run.learner import Learner
from agent.run.logs import CSV_FIELDS, ProgressLog, trim_progress_csv, trim_tensorboard
from agent.run.run_state import GlobalRNGs, LoopState, checkpoint_parts
from agent.core.schedules import chapter_episode_epsilon, linear, n_steps_schedule
from agent.run.signals import StopSignals
from envs import make_env, obs_signature, reward_threshold
from replay import FrameReplayBuffer, ReplayBuffer, ReplayMemory

__all__ = ["CSV_FIELDS", "Run", "TrainResult", "Trainer", "TrainingInterrupted", "TrainingStopped", "build_agent", "make_replay",
           "replay_targets", "run_loop", "seed_replay_with_demos", "train"]


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
    if frame_stacks and len(obs_shape) == 3 and np.dtype(obs_dtype) == np.uint8:
        return FrameReplayBuffer(cfg.replay_capacity, frame_shape=obs_shape[:2], stack=obs_shape[2], **common)
    return ReplayBuffer(cfg.replay_capacity, obs_shape, obs_dtype, **common)


def seed_replay_with_demos(replay: ReplayMemory, cfg: DQNConfig, obs_shape: tuple[int, ...], obs_dtype) -> int:
    """Store recorded play (`play.py --save-demos`) in the replay before learning starts.

    Demonstrations in the replay are DQfD's second ingredient (Hester et al.
    2018): from the first update on, the learner sees where good play leads,
    which epsilon-greedy play finds only late. Each step goes in as the
    training env would have given it (`agent.demos.training_transitions`),
    through the same `replay_targets` as the agent's own steps.

    Returns:
        The number of transitions stored.

    Raises:
        UserError: a file that does not fit the run, or Atari demos without `lives`.
    """
    demos = load_for_run(cfg, obs_shape, obs_dtype)
    stored = 0
    for obs, action, reward, next_obs, terminal in training_transitions(demos, cfg):
        stored_reward, ends = replay_targets(reward, terminal, False, cfg)
        replay.add(obs, action, stored_reward, next_obs, ends, truncated=False)
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
class Run:
    """One training session: the components, the loop's state, and what the hooks share.

    `started` is the `perf_counter()` reading at which the run would have begun
    had it never stopped, so wall time counts on across resumed sessions.
    """

    cfg: DQNConfig
    run_dir: Path
    env: gym.Env
    eval_env: gym.Env
    agent: DQNAgent
    replay: ReplayMemory
    state: LoopState
    store: CheckpointStore
    parts: dict[str, Part]  # what a checkpoint holds (agent/run_state.py)
    solve_return: float | None
    learner: Learner  # the learner calls (agent/learner.py), in line or overlapped with acting
    started: float = 0.0  # set when the loop is about to start
    epsilon: float = 1.0  # the exploration rate of the latest env step
    signals: StopSignals | None = None  # Ctrl-C/SIGTERM while training (set by `Trainer.train`)
    _out_of_time_at: tuple[int, bool] | None = None  # (env step, out of time) for `out_of_time`

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
        return evaluate(self.agent, self.eval_env, episodes, self.cfg.eval_epsilon, seed=self.cfg.seed + 20_000, stop=stop)

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
            run_files.save_model(self.run_dir, self.agent.portable_model())
            run_files.save_meta(self.run_dir, {
                "env_id": self.cfg.env_id, "obs_shape": list(self.agent.obs_shape), "obs_dtype": str(self.agent.obs_dtype),
                "num_actions": self.agent.num_actions, "env_step": s.step, "episodes": s.episodes,
                "updates": self.agent.num_updates, "checkpoint": self.store.last_name,
            })
        except OSError as e:
            raise UserError(f"cannot write model.keras/meta.json in {self.run_dir}: {e.strerror or e}; the checkpoint "
                            f"{self.store.last_name} is complete; continue with: {command('train')} --resume {self.run_dir}") from None

    def result(self, final: dict | None) -> TrainResult:
        s = self.state
        return TrainResult(self.run_dir, s.step, s.episodes, self.agent.num_updates, self.train_seconds(), s.eval_seconds,
                           final, s.evaluations, s.solved_at, finished=final is not None)


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
    for step in range(s.step + 1, cfg.total_steps + 1):  # `step` = env steps taken, this one included
        s.step = step
        # 1. act (epsilon-greedy) and step the env
        run.epsilon = epsilon_at(s.episodes if counts_episodes else step - 1)
        action = int(run.learner.act(s.obs[None], run.epsilon)[0])  # agent.act, on the weights of the latest learner call's start
        next_obs, reward, terminated, truncated, info = env.step(action)

        # 2. store; bootstrap only through `terminated` (a time limit is not a terminal state)
        stored_reward, ends_bootstrap = replay_targets(float(reward), terminated, truncated, cfg)
        replay.add(s.obs, action, stored_reward, next_obs, ends_bootstrap, truncated=truncated)
        s.obs = next_obs
        if terminated or truncated:
            s.obs, reset_info = env.reset()
            s.count_games(info, reset_info)  # real game ends: an Atari life loss ends only the training episode

        # 3. learn every train_freq env steps, once there is enough experience: sample, update, priorities
        #    (agent/learner.py; with overlap_learning the update runs on while the next env steps are taken)
        if step >= cfg.learning_starts and step % cfg.train_freq == 0 and len(replay) >= cfg.batch_size:
            replay.n_steps = n_steps_at(step)
            run.learner.call(beta_at(step), None if learning_rate_at is None else learning_rate_at(step))

        # 4. target sync: a hard copy (Mnih et al. 2015) or a Polyak step (target_tau < 1), of the settled online network
        if cfg.target_update_period and step % cfg.target_update_period == 0:
            run.settle()
            agent.sync_target(cfg.target_tau)

        # 5. the hooks: evaluate, log, checkpoint, record, and whether to stop
        reasons = [reason for hook in hooks if (reason := hook(run)) is not None]
        if reasons:
            run.settle()
            return reasons[0]
    run.settle()
    return "end"


def train(
    cfg: DQNConfig,
    run_dir: str | Path,
    progress: bool = True,
    *,
    resume: bool = False,
    keep: int = 3,
    save_replay: bool = True,
    pause_at: int | None = None,
) -> TrainResult:
    """Train a DQN agent as `cfg` says and save everything under `run_dir`.

    Args:
        cfg: the validated run configuration (for a resume: the run's saved one,
            `total_steps` and `checkpoint_every` may differ).
        run_dir: an existing, empty (or prepared) directory; for a resume, the run's.
        progress: show a progress bar on stderr.
        resume: continue exactly where the newest complete checkpoint left off:
            networks, optimizer, counters, RNG states, the live env and its
            current episode, episode statistics and the replay memory; logs
            written after that checkpoint are dropped, then appended to.
        keep: complete checkpoints kept on disk (the newest is never deleted).
        save_replay: save the replay memory with each checkpoint.
        pause_at: stop after this env step with a checkpoint, as Ctrl-C would,
            and return a result with `finished=False`.

    Raises:
        TrainingStopped: when the loss becomes non-finite; the last good
            checkpoint and model stay on disk.
        TrainingInterrupted: on Ctrl-C or SIGTERM, after saving a checkpoint.
        UserError: a checkpoint that cannot be resumed from, or written, or a
            run directory that another process holds.
    """
    with Trainer(cfg, run_dir, resume=resume, keep=keep, save_replay=save_replay) as trainer:
        return trainer.train(progress=progress, pause_at=pause_at)


class Trainer:
    """A run held open: the envs, agent, replay and loop state, ready to train on (and on).

    `train()` opens one, trains to `total_steps` and closes it; the Python API
    (agent/api.py) keeps one open across `learn` calls. The run directory is
    locked for the trainer's life (one process per run directory), and
    everything it opened is closed by `close()` on every path.

    Args:
        env, eval_env: env instances to train and evaluate on instead of
            building them from `cfg.env_id` (the Python API's own envs).
        finished_ok: resume a run that finished its `total_steps` (to train
            on with a larger total); `train.py --resume` refuses it.
    """

    def __init__(self, cfg: DQNConfig, run_dir: str | Path, *, resume: bool = False, keep: int = 3, save_replay: bool = True,
                 env: gym.Env | None = None, eval_env: gym.Env | None = None, finished_ok: bool = False):
        self.stack = contextlib.ExitStack()
        global_rngs = GlobalRNGs()
        before = global_rngs.state_dict()  # opening seeds (and a resume restores) Python's and numpy's global generators
        try:
            self.stack.enter_context(run_files.locked(Path(run_dir)))
            self.run = _open_run(cfg, Path(run_dir), self.stack, resume=resume, keep=keep, save_replay=save_replay, env=env, eval_env=eval_env,
                                 finished_ok=finished_ok)
        except BaseException:
            self.stack.close()
            global_rngs.load_state_dict(before)  # a refused run leaves the caller's global generators as they were
            raise

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the envs and release the run directory."""
        self.stack.close()

    def train(self, total_steps: int | None = None, *, progress: bool = False, pause_at: int | None = None,
              hooks: Sequence[Hook] = ()) -> TrainResult:
        """Train until env step `total_steps` (default: the config's), then save and evaluate as `train` does.

        Args:
            hooks: more hooks, called after the built-in ones each env step
                (a reason they return stops training like a pause does).
        """
        run = self.run
        extends = total_steps is not None and total_steps != run.cfg.total_steps
        if extends:
            run.cfg = run.cfg.replace(total_steps=total_steps)
            run.parts = checkpoint_parts(run.cfg, run.agent, run.replay, run.env, run.state, with_replay="replay" in run.parts, learner=run.learner)
            run_files.save_config(run.run_dir, run.cfg)
        cfg, run_dir = run.cfg, run.run_dir
        run.started = time.perf_counter() - run.state.wall_seconds  # the clock runs while training, not between calls
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: setattr(run.state, "wall_seconds", time.perf_counter() - run.started))
            signals = stack.enter_context(StopSignals())  # Ctrl-C / SIGTERM: finish this env step, save, exit
            run.signals = signals
            stack.callback(setattr, run, "signals", None)
            stack.callback(run.learner.wait)  # an exception out of the loop: no learner call runs on behind it
            log = stack.enter_context(ProgressLog(run_dir))
            bar = _progress_bar(cfg.total_steps, progress, initial=run.state.step)
            if bar is not None:
                stack.callback(bar.close)
            builtin = [Evaluate(), Log(log, bar, run.state.step), SaveCheckpoints(), RecordVideos(), StopWhen(signals, pause_at)]
            try:
                # A run stopped in its final evaluation (Ctrl-C) resumes straight into it; one asked to go further trains on.
                why = None if extends else _ended_awaiting_final_eval(run)
                why = why or run_loop(run, [*builtin, *hooks])
                run.save_checkpoint()  # the state training ended in: a resume continues from here
            except NonFiniteLossError as e:
                kept = f"the last good checkpoint ({run.store.last_name}) is kept in {run_dir}" if run.store.last_step is not None else "no checkpoint had been saved yet"
                raise TrainingStopped(f"training stopped at env step {run.state.step}: {e}; {kept}; try a lower learning_rate or max_grad_norm") from None
            if why == "signal":
                raise TrainingInterrupted(f"{signals.name} at env step {run.state.step:,}: checkpoint {run.store.last_name} saved in {run_dir}; "
                                          f"continue with: {command('train')} --resume {run_dir}", signum=signals.signum)
            if why in ("end", "solved", "time"):
                try:
                    return _finish(run)
                except EvaluationStopped:
                    raise TrainingInterrupted(f"{signals.name} during the final evaluation at env step {run.state.step:,}: checkpoint "
                                              f"{run.store.last_name} is saved in {run_dir}; evaluate it with: {command('train')} --resume {run_dir}",
                                              signum=signals.signum) from None
            return run.result(final=None)  # paused, or stopped by a hook: resumable from its checkpoint


def _open_run(cfg: DQNConfig, run_dir: Path, stack: contextlib.ExitStack, *, resume: bool, keep: int, save_replay: bool,
              env: gym.Env | None = None, eval_env: gym.Env | None = None, finished_ok: bool = False) -> Run:
    """Build the envs, agent and replay (closed by `stack`), fresh or restored from the newest checkpoint.

    For a resume every check passes before anything on disk changes.
    """
    keras.utils.set_random_seed(cfg.seed)  # python, numpy and TF seeds: same seed, same network
    built_here = env is None
    if env is None:
        env = make_env(cfg.env_id, seed=cfg.seed, mode="train", **env_options(cfg))
    stack.callback(env.close)
    if eval_env is None:
        eval_env = make_env(cfg.env_id, seed=cfg.seed + 10_000, mode="eval", **env_options(cfg))
    stack.callback(eval_env.close)
    obs_shape, obs_dtype, _ = obs_signature(env)
    agent = build_agent(cfg.replace(init_from=None) if resume else cfg, env)  # a resume takes its weights from the checkpoint
    replay = make_replay(cfg, obs_shape, obs_dtype, frame_stacks=built_here)
    state = LoopState(obs=np.zeros(obs_shape, obs_dtype))
    store = CheckpointStore(run_dir / "checkpoints", keep=keep, resume_hint=f"{command('train')} --resume {run_dir}")
    solve_return = cfg.solve_return if cfg.solve_return is not None else reward_threshold(cfg.env_id)
    learner = Learner(cfg, agent, replay, state, overlap=cfg.overlap_learning)
    stack.callback(learner.close)
    parts = checkpoint_parts(cfg, agent, replay, env, state, with_replay=save_replay, learner=learner)
    run = Run(cfg, run_dir, env, eval_env, agent, replay, state, store, parts, solve_return, learner)

    if resume:
        path = store.latest()
        everything = checkpoint_parts(cfg, agent, replay, env, state, with_replay=True, learner=learner)
        loaded = store.load(path, everything, optional=("replay", "learner"))
        where = f"checkpoint {path.name}"
        if state.step != store.last_step:
            raise CheckpointError(f"{where}: the step counters disagree")
        if state.step > cfg.total_steps:
            raise UserError(f"the checkpoint is at env step {state.step:,}, beyond total_steps={cfg.total_steps:,}; pass --steps {state.step} or more")
        final = _final_eval_of(run_dir, state.step)  # eval.json of a run that ended in this very state
        if final is not None and not finished_ok:
            if state.step >= cfg.total_steps:
                raise UserError(f"{run_dir} finished its {cfg.total_steps:,} env steps; pass --steps N (more than {cfg.total_steps:,}) to train longer")
            trained_minutes = float(final.get("train_seconds", state.train_seconds)) / 60.0
            if cfg.train_minutes is not None and trained_minutes >= cfg.train_minutes:
                raise UserError(f"{run_dir} spent its budget of {cfg.train_minutes:g} minutes of training ({trained_minutes:.2f} trained); "
                                f"pass --minutes M (more than {trained_minutes:.2f}) to train longer")
        if "replay" not in loaded:
            print(f"warning: {where} was saved without its replay memory (--no-save-replay); "
                  "learning restarts from an empty buffer", file=sys.stderr)
        if not everything["env"].restored:
            print(f"warning: {where} holds no env state for {cfg.env_id}; the resumed run starts a new episode", file=sys.stderr)
            state.obs, _ = env.reset(seed=cfg.seed + state.step)
        remove_incomplete(store.root)
        if _meta_checkpoint(run_dir) != store.last_name:  # killed (or a full disk) between the checkpoint and the model
            run.save_model()
        trim_progress_csv(run_dir / "progress.csv", state.step)
        trim_tensorboard(run_dir / "tb", state.step)
    else:
        if cfg.demos:
            seed_replay_with_demos(replay, cfg, obs_shape, obs_dtype)
        state.obs, _ = env.reset(seed=cfg.seed)
    run_files.save_config(run_dir, cfg)
    run.started = time.perf_counter() - state.wall_seconds  # wall time counts on across sessions
    return run


def _ended_awaiting_final_eval(run: Run) -> str | None:
    """Why the run already ended ("end", "solved", "time") if it did so without writing its final eval.json; else None."""
    cfg, s = run.cfg, run.state
    if _final_eval_of(run.run_dir, s.step) is not None:
        return None  # finished and evaluated: a resume allowed to go on trains on
    if s.step >= cfg.total_steps:
        return "end"
    if cfg.stop_on_solve and s.solved_at is not None and s.solved_at == s.step:
        return "solved"
    if run.out_of_time():
        return "time"
    return None


def _final_eval_of(run_dir: Path, step: int) -> dict | None:
    """eval.json if the run's final evaluation was written at env step `step` (an older one, or none: None)."""
    try:
        final = json.loads((run_dir / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    return final if isinstance(final, dict) and final.get("env_step") == step else None


def _meta_checkpoint(run_dir: Path) -> str | None:
    """The checkpoint that model.keras and meta.json were written with, if readable."""
    try:
        return run_files.load_meta(run_dir).get("checkpoint")
    except UserError:
        return None


def _finish(run: Run) -> TrainResult:
    """The final evaluation judges the network the run ends with (model.keras), with `final_eval_episodes`
    episodes: ten greedy CartPole episodes can hide a policy that fails one time in five."""
    cfg, s = run.cfg, run.state
    final = s.last_eval
    final_episodes = cfg.final_eval_episodes or cfg.eval_episodes
    if s.last_eval_step != s.step or final_episodes != cfg.eval_episodes:  # else the last periodic one is it
        with run.evaluating():
            final = run.evaluate(final_episodes)
    run_files.atomic_write_json(run.run_dir / "eval.json", {
        "env_id": cfg.env_id, "env_step": s.step, "episodes": len(final["returns"]), "epsilon": cfg.eval_epsilon,
        "solve_return": run.solve_return, "solved": run.solve_return is not None and final["mean"] >= run.solve_return, **final,
        "best": max(s.evaluations, key=lambda e: e["mean"]) if s.evaluations else None,  # best_model.keras
        "train_seconds": run.train_seconds(),  # acting and learning, evaluations excluded (the budget train_minutes counts)
    })
    return run.result(final)


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
