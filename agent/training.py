"""The training loop: act, step, store, learn, sync, evaluate, log, checkpoint.

It reads top to bottom on purpose. One env step per iteration; the learner
runs every `train_freq` env steps for `gradient_steps` updates, the target
network is synced every `target_update_period` env steps.

Checkpoints (agent/checkpoints.py) hold everything the loop carries, so a
resume continues bit for bit where the checkpoint was taken; Ctrl-C and
SIGTERM are honoured after a whole env step, with a checkpoint.
"""

from __future__ import annotations

import csv
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from agent import run_dir as run_files
from agent.checkpoints import (
    Checkpoints, LoopState, StopSignals, remove_incomplete, trim_progress_csv, trim_tensorboard,
)
from agent.config import DQNConfig
from agent.demos import load_for_run, training_transitions
from agent.dqn import DQNAgent, NonFiniteLossError
from agent.errors import UserError, command
from agent.evaluation import evaluate
from agent.schedules import chapter_episode_epsilon, linear
from envs import make_env, obs_signature, reward_threshold
from replay import FrameReplayBuffer, ReplayBuffer, ReplayMemory

CSV_FIELDS = [
    "env_step", "episodes", "updates", "wall_time_s", "train_time_s", "steps_per_s", "epsilon",
    "train_return_mean", "loss", "q_mean", "eval_return_mean", "eval_return_std",
]


class TrainingStopped(RuntimeError):
    """Training ended early for a reason the user must hear (e.g. a non-finite loss)."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the run was saved where it stood (`signum` says which signal)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


def record_video(agent: DQNAgent, cfg: DQNConfig, path: Path) -> list[float]:
    """One evaluation episode as an mp4 (full-resolution frames with the HUD), for `record_every`."""
    from agent.recording import record_episodes

    path.parent.mkdir(parents=True, exist_ok=True)
    return record_episodes(agent.q_values, cfg.env_id, path, episodes=1, seed=cfg.seed + 30_000, epsilon=cfg.eval_epsilon, pixels=cfg.pixels,
                           pixel_view=cfg.pixel_view)


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


class ProgressLog:
    """progress.csv and TensorBoard scalars, written side by side."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "progress.csv"
        new = not self.path.exists()
        self.file = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_FIELDS)
        if new:
            self.writer.writeheader()
        self.tb = tf.summary.create_file_writer(str(run_dir / "tb"))

    def write(self, row: dict) -> None:
        self.writer.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
        self.file.flush()
        with self.tb.as_default(step=int(row["env_step"])):
            for key, value in row.items():
                if key != "env_step" and value is not None and np.isfinite(value):
                    tf.summary.scalar(key, value)
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def epsilon_schedule(cfg: DQNConfig):
    """(function, counts) where counts is "steps" or "episodes"."""
    if cfg.epsilon_schedule == "linear_episodes":
        return chapter_episode_epsilon(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay), "episodes"
    return linear(cfg.epsilon_start, cfg.epsilon_end, cfg.epsilon_decay), "steps"


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


def make_replay(cfg: DQNConfig, obs_shape: tuple[int, ...], obs_dtype) -> ReplayMemory:
    """Stacked uint8 frames go to the frame memory (each frame stored once); vectors to the plain ring."""
    if len(obs_shape) == 3 and np.dtype(obs_dtype) == np.uint8:
        return FrameReplayBuffer(
            cfg.replay_capacity, frame_shape=obs_shape[:2], stack=obs_shape[2], seed=cfg.seed, n_steps=cfg.n_steps, gamma=cfg.gamma
        )
    return ReplayBuffer(cfg.replay_capacity, obs_shape, obs_dtype, seed=cfg.seed, n_steps=cfg.n_steps, gamma=cfg.gamma)


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
    run_dir = Path(run_dir)
    with run_files.locked(run_dir):  # one process per run directory
        return _train(cfg, run_dir, progress, resume=resume, keep=keep, save_replay=save_replay, pause_at=pause_at)


def _train(cfg: DQNConfig, run_dir: Path, progress: bool, *, resume: bool, keep: int, save_replay: bool, pause_at: int | None) -> TrainResult:
    keras.utils.set_random_seed(cfg.seed)  # python, numpy and TF seeds: same seed, same network
    env = make_env(cfg.env_id, seed=cfg.seed, mode="train", pixels=cfg.pixels, pixel_view=cfg.pixel_view)
    eval_env = make_env(cfg.env_id, seed=cfg.seed + 10_000, mode="eval", pixels=cfg.pixels, pixel_view=cfg.pixel_view)
    obs_shape, obs_dtype, _ = obs_signature(env)
    agent = build_agent(cfg.replace(init_from=None) if resume else cfg, env)  # a resume takes its weights from the checkpoint
    replay = make_replay(cfg, obs_shape, obs_dtype)
    epsilon_at, epsilon_counts = epsilon_schedule(cfg)
    learning_rate_at = linear(cfg.learning_rate, cfg.learning_rate_end if cfg.learning_rate_end is not None else cfg.learning_rate, cfg.total_steps)
    solve_return = cfg.solve_return if cfg.solve_return is not None else reward_threshold(cfg.env_id)
    store = Checkpoints(run_dir, cfg, agent, replay, env, keep=keep, save_replay=save_replay)

    if resume:  # every check passes before anything on disk changes
        s, obs = store.restore_latest()
        if s.step > cfg.total_steps:
            raise UserError(f"the checkpoint is at env step {s.step:,}, beyond total_steps={cfg.total_steps:,}; pass --steps {s.step} or more")
        if s.step == cfg.total_steps and (run_dir / "eval.json").exists():
            raise UserError(f"{run_dir} finished its {cfg.total_steps:,} env steps; pass --steps N (more than {cfg.total_steps:,}) to train longer")
        remove_incomplete(store.root)
        trim_progress_csv(run_dir / "progress.csv", s.step)
        trim_tensorboard(run_dir / "tb", s.step)
    else:
        s = LoopState()
        if cfg.demos:
            seed_replay_with_demos(replay, cfg, obs_shape, obs_dtype)
        obs, _ = env.reset(seed=cfg.seed)
    run_files.save_config(run_dir, cfg)
    log = ProgressLog(run_dir)

    def save_checkpoint() -> None:
        """checkpoints/step-NNNNNNNNN (written whole or not at all), then model.keras and meta.json."""
        if store.last_step == s.step:
            return  # this very state is on disk already
        s.wall_seconds = time.perf_counter() - start
        store.save(s, obs)
        try:
            run_files.save_model(run_dir, agent.online)
            run_files.save_meta(run_dir, {
                "env_id": cfg.env_id, "obs_shape": list(obs_shape), "obs_dtype": str(obs_dtype), "num_actions": agent.num_actions,
                "env_step": s.step, "episodes": s.episodes, "updates": agent.num_updates, "checkpoint": store.last_name,
            })
        except OSError as e:
            raise UserError(f"cannot write model.keras/meta.json in {run_dir}: {e.strerror or e}; "
                            f"the checkpoint {store.last_name} is complete; continue with: {command('train')} --resume {run_dir}") from None

    bar = _progress_bar(cfg.total_steps, progress, initial=s.step)
    start = time.perf_counter() - s.wall_seconds  # wall time counts on across sessions
    last_log_time, last_log_step = time.perf_counter(), s.step
    epsilon = epsilon_at(s.episodes if epsilon_counts == "episodes" else s.step)
    paused = False
    stop = StopSignals()  # Ctrl-C / SIGTERM: finish this env step, save, exit
    try:
        with stop:
            for step in range(s.step + 1, cfg.total_steps + 1):  # `step` = env steps taken, this one included
                s.step = step
                # 1. act (epsilon-greedy) and step the env
                epsilon = epsilon_at(s.episodes if epsilon_counts == "episodes" else step - 1)
                action = int(agent.act(obs[None], epsilon)[0])
                next_obs, reward, terminated, truncated, info = env.step(action)
                episode_over = terminated or truncated

                # 2. store; bootstrap only through `terminated` (a time limit is not a terminal state)
                stored_reward, ends_bootstrap = replay_targets(float(reward), terminated, truncated, cfg)
                replay.add(obs, action, stored_reward, next_obs, ends_bootstrap, truncated=truncated)
                obs = next_obs
                if episode_over:
                    obs, reset_info = env.reset()
                    # A real game end (an Atari life loss ends only the training episode); a game
                    # can also end inside an Atari pseudo-reset, which reports it from reset.
                    for record in (info.get("episode"), reset_info.get("episode")):
                        if record is not None:
                            s.episodes += 1
                            s.recent_returns.append(float(record["r"]))

                # 3. learn every train_freq env steps, once there is enough experience
                if step >= cfg.learning_starts and step % cfg.train_freq == 0 and len(replay) >= cfg.batch_size:
                    if cfg.learning_rate_end is not None:
                        agent.set_learning_rate(learning_rate_at(step))
                    s.metrics = agent.update(replay.sample_many(cfg.gradient_steps, cfg.batch_size))

                # 4. target sync: a hard copy (Mnih et al. 2015) or a Polyak step (target_tau < 1)
                if cfg.target_update_period and step % cfg.target_update_period == 0:
                    agent.sync_target(cfg.target_tau)

                # 5. evaluate greedily on a separate env (its time is kept apart)
                eval_row = None
                if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.total_steps:
                    t0 = time.perf_counter()
                    result = s.last_eval = evaluate(agent, eval_env, cfg.eval_episodes, cfg.eval_epsilon, seed=cfg.seed + 20_000)
                    s.last_eval_step = step
                    if result["mean"] > max((e["mean"] for e in s.evaluations), default=-np.inf):
                        run_files.save_model(run_dir, agent.online, which="best")  # DQN oscillates: keep its best
                    s.eval_seconds += time.perf_counter() - t0  # evaluation and its bookkeeping, kept out of training time
                    train_seconds = time.perf_counter() - start - s.eval_seconds
                    eval_row = {"env_step": step, "mean": result["mean"], "std": result["std"], "train_seconds": train_seconds}
                    s.evaluations.append(eval_row)
                    if s.solved_at is None and solve_return is not None and result["mean"] >= solve_return:
                        s.solved_at = step

                # 6. log
                if (cfg.log_every and step % cfg.log_every == 0) or eval_row is not None:
                    now = time.perf_counter()
                    row = {
                        "env_step": step, "episodes": s.episodes, "updates": agent.num_updates,
                        "wall_time_s": now - start, "train_time_s": now - start - s.eval_seconds,
                        "steps_per_s": (step - last_log_step) / max(now - last_log_time, 1e-9),
                        "epsilon": epsilon,
                        "train_return_mean": float(np.mean(s.recent_returns)) if s.recent_returns else None,
                        "loss": s.metrics["loss"], "q_mean": s.metrics["q_mean"],
                        "eval_return_mean": eval_row["mean"] if eval_row else None,
                        "eval_return_std": eval_row["std"] if eval_row else None,
                    }
                    log.write(row)
                    last_log_time, last_log_step = now, step
                if bar is not None and step % 250 == 0:
                    bar.update(step - bar.n)
                    bar.set_postfix(ret=f"{np.mean(s.recent_returns):.1f}" if s.recent_returns else "-", eps=f"{epsilon:.3f}", loss=f"{s.metrics['loss']:.4f}", refresh=False)

                # 7. checkpoint, and an evaluation video now and then
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    save_checkpoint()
                if cfg.record_every and step % cfg.record_every == 0:
                    record_video(agent, cfg, run_dir / "videos" / f"step-{step:09d}.mp4")

                # 8. stop after a whole env step: Ctrl-C, SIGTERM, pause_at, or solved
                if stop.signum is not None or step == pause_at:
                    paused = True
                    break
                if cfg.stop_on_solve and s.solved_at is not None:
                    break

            # The state training ended in, saved before the final evaluation: a resume continues from here.
            save_checkpoint()
            if stop.signum is not None:
                raise TrainingInterrupted(
                    f"{stop.name} at env step {s.step:,}: checkpoint {store.last_name} saved in {run_dir}; "
                    f"continue with: {command('train')} --resume {run_dir}", signum=stop.signum)
            if paused:
                env.close()
                eval_env.close()
                return TrainResult(run_dir, s.step, s.episodes, agent.num_updates, time.perf_counter() - start - s.eval_seconds,
                                   s.eval_seconds, None, s.evaluations, s.solved_at, finished=False)

            # The final evaluation judges the network the run ends with (model.keras), with
            # final_eval_episodes episodes: ten greedy CartPole episodes can hide a policy that fails one time in five.
            final = s.last_eval
            final_episodes = cfg.final_eval_episodes or cfg.eval_episodes
            if s.last_eval_step != s.step or final_episodes != cfg.eval_episodes:
                t0 = time.perf_counter()
                final = evaluate(agent, eval_env, final_episodes, cfg.eval_epsilon, seed=cfg.seed + 20_000)
                s.eval_seconds += time.perf_counter() - t0
    except NonFiniteLossError as e:
        kept = f"the last good checkpoint ({store.last_name}) is kept in {run_dir}" if store.last_step is not None else "no checkpoint had been saved yet"
        raise TrainingStopped(f"training stopped at env step {s.step}: {e}; {kept}; try a lower learning_rate or max_grad_norm") from None
    finally:
        if bar is not None:
            bar.close()
        log.close()

    train_seconds = time.perf_counter() - start - s.eval_seconds
    run_files.atomic_write_json(run_dir / "eval.json", {
        "env_id": cfg.env_id, "env_step": s.step, "episodes": len(final["returns"]), "epsilon": cfg.eval_epsilon,
        "solve_return": solve_return, "solved": solve_return is not None and final["mean"] >= solve_return, **final,
        "best": max(s.evaluations, key=lambda e: e["mean"]) if s.evaluations else None,  # best_model.keras
    })
    env.close()
    eval_env.close()
    return TrainResult(run_dir, s.step, s.episodes, agent.num_updates, train_seconds, s.eval_seconds, final, s.evaluations, s.solved_at)


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
