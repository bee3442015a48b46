"""The training loop: act, step, store, learn, sync, evaluate, log, checkpoint.

It reads top to bottom on purpose. One env step per iteration; the learner
runs every `train_freq` env steps for `gradient_steps` updates, the target
network is synced every `target_update_period` env steps.
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import tfquiet  # noqa: F401,E402  (before TensorFlow)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from agent import run_dir as run_files  # noqa: E402
from agent.config import DQNConfig  # noqa: E402
from agent.dqn import DQNAgent, NonFiniteLossError  # noqa: E402
from agent.errors import UserError  # noqa: E402
from agent.evaluation import evaluate  # noqa: E402
from agent.schedules import chapter_episode_epsilon, linear  # noqa: E402
from envs import make_env, obs_signature, reward_threshold  # noqa: E402
from replay import FrameReplayBuffer, ReplayBuffer  # noqa: E402

CSV_FIELDS = [
    "env_step", "episodes", "updates", "wall_time_s", "train_time_s", "steps_per_s", "epsilon",
    "train_return_mean", "loss", "q_mean", "eval_return_mean", "eval_return_std",
]


class TrainingStopped(RuntimeError):
    """Training ended early for a reason the user must hear (e.g. a non-finite loss)."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C: the run was saved where it stood."""


def record_video(agent: DQNAgent, cfg: DQNConfig, path: Path) -> list[float]:
    """One evaluation episode as an mp4 (full-resolution frames with the HUD), for `record_every`."""
    from agent.recording import record_episodes

    path.parent.mkdir(parents=True, exist_ok=True)
    return record_episodes(agent.q_values, cfg.env_id, path, episodes=1, seed=cfg.seed + 30_000, epsilon=cfg.eval_epsilon)


@dataclass
class TrainResult:
    run_dir: Path
    env_steps: int
    episodes: int
    updates: int
    train_seconds: float  # wall-clock spent acting and learning (evaluation excluded)
    eval_seconds: float  # wall-clock spent in evaluations
    final_eval: dict
    evaluations: list[dict] = field(default_factory=list)  # {"env_step", "mean", "std", "train_seconds"}
    solved_at: int | None = None  # env step of the first evaluation >= the solve threshold


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


def make_replay(cfg: DQNConfig, obs_shape: tuple[int, ...], obs_dtype) -> ReplayBuffer | FrameReplayBuffer:
    """Stacked uint8 frames go to the frame memory (each frame stored once); vectors to the plain ring."""
    if len(obs_shape) == 3 and np.dtype(obs_dtype) == np.uint8:
        return FrameReplayBuffer(cfg.replay_capacity, frame_shape=obs_shape[:2], stack=obs_shape[2], seed=cfg.seed)
    return ReplayBuffer(cfg.replay_capacity, obs_shape, obs_dtype, seed=cfg.seed)


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


def train(cfg: DQNConfig, run_dir: str | Path, progress: bool = True) -> TrainResult:
    """Train a DQN agent as `cfg` says and save everything under `run_dir`.

    Args:
        cfg: the validated run configuration.
        run_dir: an existing, empty (or prepared) directory.
        progress: show a progress bar on stderr.

    Raises:
        TrainingStopped: when the loss becomes non-finite; the last good
            checkpoint and model stay on disk.
    """
    run_dir = Path(run_dir)
    keras.utils.set_random_seed(cfg.seed)  # python, numpy and TF seeds: same seed, same network
    env = make_env(cfg.env_id, seed=cfg.seed, mode="train", pixels=cfg.pixels)
    eval_env = make_env(cfg.env_id, seed=cfg.seed + 10_000, mode="eval", pixels=cfg.pixels)
    obs_shape, obs_dtype, _ = obs_signature(env)
    agent = build_agent(cfg, env)
    replay = make_replay(cfg, obs_shape, obs_dtype)
    epsilon_at, epsilon_counts = epsilon_schedule(cfg)
    solve_return = cfg.solve_return if cfg.solve_return is not None else reward_threshold(cfg.env_id)

    run_files.save_config(run_dir, cfg)
    env_step_var = tf.Variable(0, dtype=tf.int64, name="env_step")
    checkpoint = tf.train.Checkpoint(online=agent.online, optimizer=agent.optimizer, env_step=env_step_var)
    if agent.target is not None:
        checkpoint.target = agent.target
    manager = tf.train.CheckpointManager(checkpoint, str(run_dir / "checkpoints"), max_to_keep=3)
    log = ProgressLog(run_dir)

    def save_checkpoint(step: int) -> None:
        env_step_var.assign(step)
        manager.save(checkpoint_number=step)
        run_files.save_model(run_dir, agent.online)
        run_files.save_meta(run_dir, {
            "env_id": cfg.env_id, "obs_shape": list(obs_shape), "obs_dtype": str(obs_dtype),
            "num_actions": agent.num_actions, "env_step": step, "episodes": episodes, "updates": agent.num_updates,
        })

    bar = _progress_bar(cfg.total_steps, progress)
    recent_returns: deque[float] = deque(maxlen=20)
    metrics = {"loss": float("nan"), "q_mean": float("nan")}
    evaluations: list[dict] = []
    solved_at = None
    episodes = 0
    eval_seconds = 0.0
    start = time.perf_counter()
    last_log_time, last_log_step = start, 0
    obs, _ = env.reset(seed=cfg.seed)
    epsilon = epsilon_at(0)
    last_eval, last_eval_step = None, -1

    step = 0
    try:
        for step in range(1, cfg.total_steps + 1):  # `step` = env steps taken, this one included
            # 1. act (epsilon-greedy) and step the env
            epsilon = epsilon_at(episodes if epsilon_counts == "episodes" else step - 1)
            action = int(agent.act(obs[None], epsilon)[0])
            next_obs, reward, terminated, truncated, info = env.step(action)
            episode_over = terminated or truncated

            # 2. store; bootstrap only through `terminated` (a time limit is not a terminal state)
            stored_reward, ends_bootstrap = replay_targets(float(reward), terminated, truncated, cfg)
            replay.add(obs, action, stored_reward, next_obs, ends_bootstrap, truncated=truncated)
            obs = next_obs
            if episode_over:
                if "episode" in info:  # a real game end (an Atari life loss ends only the training episode)
                    episodes += 1
                    recent_returns.append(float(info["episode"]["r"]))
                obs, _ = env.reset()

            # 3. learn every train_freq env steps, once there is enough experience
            if step >= cfg.learning_starts and step % cfg.train_freq == 0 and len(replay) >= cfg.batch_size:
                metrics = agent.update(replay.sample_many(cfg.gradient_steps, cfg.batch_size))

            # 4. hard target sync (Mnih et al. 2015)
            if cfg.target_update_period and step % cfg.target_update_period == 0:
                agent.sync_target()

            # 5. evaluate greedily on a separate env (its time is kept apart)
            eval_row = None
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.total_steps:
                t0 = time.perf_counter()
                result = last_eval = evaluate(agent, eval_env, cfg.eval_episodes, cfg.eval_epsilon, seed=cfg.seed + 20_000)
                last_eval_step = step
                eval_seconds += time.perf_counter() - t0
                train_seconds = time.perf_counter() - start - eval_seconds
                eval_row = {"env_step": step, "mean": result["mean"], "std": result["std"], "train_seconds": train_seconds}
                evaluations.append(eval_row)
                if solved_at is None and solve_return is not None and result["mean"] >= solve_return:
                    solved_at = step

            # 6. log
            if (cfg.log_every and step % cfg.log_every == 0) or eval_row is not None:
                now = time.perf_counter()
                row = {
                    "env_step": step, "episodes": episodes, "updates": agent.num_updates,
                    "wall_time_s": now - start, "train_time_s": now - start - eval_seconds,
                    "steps_per_s": (step - last_log_step) / max(now - last_log_time, 1e-9),
                    "epsilon": epsilon,
                    "train_return_mean": float(np.mean(recent_returns)) if recent_returns else None,
                    "loss": metrics["loss"], "q_mean": metrics["q_mean"],
                    "eval_return_mean": eval_row["mean"] if eval_row else None,
                    "eval_return_std": eval_row["std"] if eval_row else None,
                }
                log.write(row)
                last_log_time, last_log_step = now, step
            if bar is not None and step % 250 == 0:
                bar.update(step - bar.n)
                bar.set_postfix(ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "-", eps=f"{epsilon:.3f}", loss=f"{metrics['loss']:.4f}", refresh=False)

            # 7. checkpoint, and an evaluation video now and then
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save_checkpoint(step)
            if cfg.record_every and step % cfg.record_every == 0:
                record_video(agent, cfg, run_dir / "videos" / f"step-{step:09d}.mp4")
            if cfg.stop_on_solve and solved_at is not None:
                break
    except KeyboardInterrupt:
        save_checkpoint(step)
        raise TrainingInterrupted(f"interrupted at env step {step:,}; checkpoint and model saved in {run_dir}") from None
    except NonFiniteLossError as e:
        last = manager.latest_checkpoint
        kept = f"the last good checkpoint ({Path(last).name}) is kept in {run_dir}" if last else "no checkpoint had been saved yet"
        raise TrainingStopped(f"training stopped at env step {step}: {e}; {kept}; try a lower learning_rate or max_grad_norm") from None
    finally:
        if bar is not None:
            bar.close()
        log.close()

    train_seconds = time.perf_counter() - start - eval_seconds
    final = last_eval
    if last_eval_step != step:
        t0 = time.perf_counter()
        final = evaluate(agent, eval_env, cfg.eval_episodes, cfg.eval_epsilon, seed=cfg.seed + 20_000)
        eval_seconds += time.perf_counter() - t0
    save_checkpoint(step)
    run_files.atomic_write_json(run_dir / "eval.json", {
        "env_id": cfg.env_id, "env_step": step, "episodes": cfg.eval_episodes, "epsilon": cfg.eval_epsilon,
        "solve_return": solve_return, "solved": solve_return is not None and final["mean"] >= solve_return, **final,
    })
    env.close()
    eval_env.close()
    return TrainResult(run_dir, step, episodes, agent.num_updates, train_seconds, eval_seconds, final, evaluations, solved_at)


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
