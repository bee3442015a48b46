"""Opening, training and finishing a run: `Trainer` holds one open, `train` runs one start to end.

Everything a run needs is opened in one `ExitStack` (so it is closed on every
path); the loop (agent/run/loop.py) runs with the built-in hooks; the run
ends in one place: a checkpoint of the state it stopped in, then the final
evaluation. Each component saves and restores itself into a checkpoint
(agent/run/run_state.py lists the parts), so a resume continues bit for bit
where the checkpoint was taken; Ctrl-C and SIGTERM are honoured after a whole
env step, with a checkpoint.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import keras
import numpy as np

from agent.core.config import DQNConfig, env_options
from agent.dqn.agent import NonFiniteLossError
from agent.rollout.evaluation import EVAL_ENV_SEED_OFFSET, EvaluationStopped
from agent.run.checkpoints import remove_incomplete
from agent.run.hooks import Evaluate, Log, RecordVideos, SaveCheckpoints, StopWhen
from agent.run.learner import Learner
from agent.run.logs import ProgressLog, trim_progress_csv, trim_tensorboard
from agent.run.loop import (Hook, Run, TrainingInterrupted, TrainingStopped, TrainResult, build_agent, make_replay, run_loop,
                            seed_replay_with_demos)
from agent.run.run_dir import RunDirectory
from agent.run.run_state import GlobalRNGs, LoopState, checkpoint_parts
from agent.run.signals import StopSignals
from common.errors import CheckpointError, UserError
from envs import make_env, obs_signature, reward_threshold


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
            directory = RunDirectory(run_dir)
            self.stack.enter_context(directory.locked())
            self.run = _open_run(cfg, directory, self.stack, resume=resume, keep=keep, save_replay=save_replay, env=env, eval_env=eval_env,
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
            run.directory.save_config(run.cfg)
        cfg, run_dir = run.cfg, run.run_dir
        run.started = time.perf_counter() - run.state.wall_seconds  # the clock runs while training, not between calls
        with contextlib.ExitStack() as stack:
            stack.callback(lambda: setattr(run.state, "wall_seconds", time.perf_counter() - run.started))
            signals = stack.enter_context(StopSignals())  # Ctrl-C / SIGTERM: finish this env step, save, exit
            run.signals = signals
            stack.callback(setattr, run, "signals", None)
            stack.callback(run.learner.wait)  # an exception out of the loop: no learner call runs on behind it
            log = stack.enter_context(ProgressLog(run.directory.progress_csv, run.directory.tensorboard_dir))
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
                                          f"continue with: {run.directory.resume_command()}", signum=signals.signum)
            if why in ("end", "solved", "time"):
                try:
                    return _finish(run)
                except EvaluationStopped:
                    raise TrainingInterrupted(f"{signals.name} during the final evaluation at env step {run.state.step:,}: checkpoint "
                                              f"{run.store.last_name} is saved in {run_dir}; evaluate it with: {run.directory.resume_command()}",
                                              signum=signals.signum) from None
            return run.result(final=None)  # paused, or stopped by a hook: resumable from its checkpoint


def _open_run(cfg: DQNConfig, directory: RunDirectory, stack: contextlib.ExitStack, *, resume: bool, keep: int, save_replay: bool,
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
        eval_env = make_env(cfg.env_id, seed=cfg.seed + EVAL_ENV_SEED_OFFSET, mode="eval", **env_options(cfg))
    stack.callback(eval_env.close)
    obs_shape, obs_dtype, _ = obs_signature(env)
    agent = build_agent(cfg.replace(init_from=None) if resume else cfg, env)  # a resume takes its weights from the checkpoint
    replay = make_replay(cfg, obs_shape, obs_dtype, frame_stacks=built_here)
    state = LoopState(obs=np.zeros(obs_shape, obs_dtype), carry=agent.initial_carry(1) if getattr(agent, "recurrent", False) else None)
    store = directory.checkpoint_store(keep)
    solve_return = cfg.solve_return if cfg.solve_return is not None else reward_threshold(cfg.env_id)
    learner = Learner(cfg, agent, replay, state, overlap=cfg.overlap_learning)
    stack.callback(learner.close)
    parts = checkpoint_parts(cfg, agent, replay, env, state, with_replay=save_replay, learner=learner)
    run = Run(cfg, directory, env, eval_env, agent, replay, state, store, parts, solve_return, learner)

    if resume:
        path = store.latest()
        everything = checkpoint_parts(cfg, agent, replay, env, state, with_replay=True, learner=learner)
        loaded = store.load(path, everything, optional=("replay", "learner"))
        where = f"checkpoint {path.name}"
        if state.step != store.last_step:
            raise CheckpointError(f"{where}: the step counters disagree")
        if state.step > cfg.total_steps:
            raise UserError(f"the checkpoint is at env step {state.step:,}, beyond total_steps={cfg.total_steps:,}; pass --steps {state.step} or more")
        final = directory.final_eval_at(state.step)  # eval.json of a run that ended in this very state
        if final is not None and not finished_ok:
            if state.step >= cfg.total_steps:
                raise UserError(f"{directory} finished its {cfg.total_steps:,} env steps; pass --steps N (more than {cfg.total_steps:,}) to train longer")
            trained_minutes = float(final.get("train_seconds", state.train_seconds)) / 60.0
            if cfg.train_minutes is not None and trained_minutes >= cfg.train_minutes:
                raise UserError(f"{directory} spent its budget of {cfg.train_minutes:g} minutes of training ({trained_minutes:.2f} trained); "
                                f"pass --minutes M (more than {trained_minutes:.2f}) to train longer")
        if "replay" not in loaded:
            print(f"warning: {where} was saved without its replay memory (--no-save-replay); "
                  "learning restarts from an empty buffer", file=sys.stderr)
        if not everything["env"].restored:
            print(f"warning: {where} holds no env state for {cfg.env_id}; the resumed run starts a new episode", file=sys.stderr)
            state.obs, _ = env.reset(seed=cfg.seed + state.step)
        remove_incomplete(store.root)
        directory.remove_stale_temporaries()  # what a killed process left half-written (we hold the lock: nobody writes them now)
        if (directory.meta_or_none() or {}).get("checkpoint") != store.last_name:  # killed (or a full disk) between the checkpoint and the model
            run.save_model()
        trim_progress_csv(directory.progress_csv, state.step)
        trim_tensorboard(directory.tensorboard_dir, state.step)
    else:
        if cfg.demos:
            seed_replay_with_demos(replay, cfg, obs_shape, obs_dtype, agent)
        state.obs, _ = env.reset(seed=cfg.seed)
    directory.save_config(cfg)
    run.started = time.perf_counter() - state.wall_seconds  # wall time counts on across sessions
    return run


def _ended_awaiting_final_eval(run: Run) -> str | None:
    """Why the run already ended ("end", "solved", "time") if it did so without writing its final eval.json; else None."""
    cfg, s = run.cfg, run.state
    if run.directory.final_eval_at(s.step) is not None:
        return None  # finished and evaluated: a resume allowed to go on trains on
    if s.step >= cfg.total_steps:
        return "end"
    if cfg.stop_on_solve and s.solved_at is not None and s.solved_at == s.step:
        return "solved"
    if run.out_of_time():
        return "time"
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
    run.directory.save_final_eval({
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
