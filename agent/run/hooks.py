"""The side jobs of the training loop, each a periodic hook called after every env step.

A hook is a callable `hook(run) -> str | None` that reads and updates the
`Run` (agent/run/loop.py) and returns a reason to stop, or None to go on. The
loop calls them in order after each whole env step, so a checkpoint always
holds a state between steps. A hook that reads or uses the networks, the
update count or the metrics calls `run.settle()` first: with
`overlap_learning` a learner call may still be running (agent/run/learner.py).

    Evaluate         greedy episodes on a separate env every `eval_every` env steps and at the end
    Log              progress.csv, TensorBoard and the progress bar every `log_every` and after each evaluation
    SaveCheckpoints  a checkpoint every `checkpoint_every` env steps
    RecordVideos     an evaluation episode as mp4 every `record_every` env steps
    StopWhen         Ctrl-C/SIGTERM, `pause_at`, solved with `stop_on_solve`, or `train_minutes` spent:
                     "signal", "pause", "solved", "time"
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from agent.rollout.evaluation import VIDEO_SEED_OFFSET, EvaluationStopped
from agent.run.logs import ProgressLog
from agent.run.loop import Run
from agent.run.signals import StopSignals


def every(period: int, step: int) -> bool:
    """Whether a job with `period` env steps (0 = never) is due at `step`."""
    return bool(period) and step % period == 0


class Evaluate:
    """Greedy evaluation (epsilon `eval_epsilon`) on the separate eval env; keeps `best_model.keras`.
    Ctrl-C in the middle of one ends it at once, unrecorded (its curve point is missing after a resume)."""

    def __call__(self, run: Run) -> None:
        cfg, s = run.cfg, run.state
        if not (every(cfg.eval_every, s.step) or s.step == cfg.total_steps or run.out_of_time()):  # the run's last step: its curve ends there
            return None
        run.settle()  # waiting for the learner is training time
        with run.evaluating():  # the saving counts as evaluation time too
            try:
                result = run.evaluate(cfg.eval_episodes)
            except EvaluationStopped:
                return None  # Ctrl-C: StopWhen ends the run after this step; an evaluation cut short is not recorded
            if result["mean"] > max((e["mean"] for e in s.evaluations), default=-np.inf):
                run.directory.save_model(run.agent.portable_model(), which="best")  # DQN oscillates: keep its best
        s.last_eval, s.last_eval_step = result, s.step
        s.evaluations.append({"env_step": s.step, "mean": result["mean"], "std": result["std"], "train_seconds": run.train_seconds()})
        if s.solved_at is None and run.solve_return is not None and result["mean"] >= run.solve_return:
            s.solved_at = s.step
        return None


class Log:
    """A progress.csv row and TensorBoard scalars every `log_every` env steps and after each evaluation,
    and the progress bar on stderr."""

    def __init__(self, log: ProgressLog, bar, start_step: int):
        self.log, self.bar = log, bar
        self.last_time, self.last_step = time.perf_counter(), start_step

    def __call__(self, run: Run) -> None:
        cfg, s, step = run.cfg, run.state, run.state.step
        evaluated = s.last_eval_step == step
        if every(cfg.log_every, step) or evaluated:
            run.settle()  # the row's update count and loss are those of every learner call so far
            now = time.perf_counter()
            wall = now - run.started
            eval_row = s.evaluations[-1] if evaluated else None
            self.log.write({
                "env_step": step, "episodes": s.episodes, "updates": run.agent.num_updates,
                "wall_time_s": wall, "train_time_s": wall - s.eval_seconds,
                "steps_per_s": (step - self.last_step) / max(now - self.last_time, 1e-9),
                "epsilon": run.epsilon,
                "train_return_mean": float(np.mean(s.recent_returns)) if s.recent_returns else None,
                "loss": s.metrics["loss"], "q_mean": s.metrics["q_mean"],
                "eval_return_mean": eval_row["mean"] if eval_row else None,
                "eval_return_std": eval_row["std"] if eval_row else None,
            })
            self.last_time, self.last_step = now, step
        if self.bar is not None and step % 250 == 0:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(ret=f"{np.mean(s.recent_returns):.1f}" if s.recent_returns else "-", eps=f"{run.epsilon:.3f}",
                                 loss=f"{s.metrics['loss']:.4f}", refresh=False)
        return None


class SaveCheckpoints:
    def __call__(self, run: Run) -> None:
        if every(run.cfg.checkpoint_every, run.state.step):
            run.save_checkpoint()
        return None


def record_video(agent, cfg, path: Path) -> list[float]:
    """One evaluation episode as an mp4 (full-resolution frames with the HUD), for `record_every`."""
    from agent.core.config import env_options
    from agent.rollout.recording import record_episodes

    path.parent.mkdir(parents=True, exist_ok=True)
    return record_episodes(agent.q_values, cfg.env_id, path, episodes=1, seed=cfg.seed + VIDEO_SEED_OFFSET, epsilon=cfg.eval_epsilon,
                           env_options=env_options(cfg))


class RecordVideos:
    def __call__(self, run: Run) -> None:
        if every(run.cfg.record_every, run.state.step):
            run.settle()
            with run.evaluating():  # an evaluation episode: not training time (train_minutes)
                record_video(run.agent, run.cfg, run.directory.video_path(run.state.step))
        return None


class StopWhen:
    """Stop after a whole env step: on Ctrl-C or SIGTERM, at `pause_at`, once solved with `stop_on_solve`,
    or once the run's training time reaches `train_minutes` (a compute budget, as in "30 minutes of training")."""

    def __init__(self, signals: StopSignals, pause_at: int | None):
        self.signals, self.pause_at = signals, pause_at

    def __call__(self, run: Run) -> str | None:
        if self.signals.signum is not None:
            return "signal"
        if run.state.step == self.pause_at:
            return "pause"
        if run.cfg.stop_on_solve and run.state.solved_at == run.state.step:  # solved at this evaluation (a later run goes on)
            return "solved"
        if run.out_of_time():
            return "time"
        return None
