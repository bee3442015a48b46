"""Inside a trial (a Ray worker process): `run_trial` trains one run directory to its total_steps, or resumes it from
its checkpoint, and `ReportToTune` sends each evaluation to Tune (for its progress and for ASHA).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from agent.sweep.plan import trial_name
from agent.sweep.state import final_eval
from common.errors import UserError

METRIC = "eval_return_mean"
LOCK_WAIT_S = 120.0  # seconds a trial waits for a run directory that a dying worker still holds


class ReportToTune:
    """A training hook: each evaluation, once, to Tune (`ray.tune.report`), for its progress and for ASHA.

    A resumed run's earlier evaluations are sent first, so a scheduler that
    lost them with the process sees the whole curve again.
    """

    def __init__(self, report, resumed_from: int | None = None):
        self.report, self.sent, self.resumed_from = report, 0, resumed_from

    def __call__(self, run) -> None:
        evaluations = run.state.evaluations
        while self.sent < len(evaluations):
            e = evaluations[self.sent]
            metrics = {"env_step": e["env_step"], METRIC: e["mean"], "eval_return_std": e["std"], "train_seconds": e["train_seconds"]}
            if self.resumed_from is not None and e["env_step"] <= self.resumed_from:
                metrics["resumed_from"] = self.resumed_from  # an evaluation of the run before it was stopped, sent again
            self.report(metrics)
            self.sent += 1
        return None


def quiet_shutdown_exit(unraisable) -> None:
    """`sys.unraisablehook` for trial workers: drop a SystemExit that could not propagate, pass on anything else.

    Ray ends a finished trial's worker with SIGTERM, and its handler raises SystemExit wherever the interpreter is;
    inside a weakref callback that cannot propagate, and Python's default hook printed "Exception ignored in ..."
    and a traceback into the sweep's output, for a worker that was exiting as asked.
    """
    if isinstance(unraisable.exc_value, SystemExit):
        return
    sys.__unraisablehook__(unraisable)


def run_trial(params: dict, trials: dict | None = None, cpus: float = 1) -> None:
    """The Tune trainable: train (or resume) one run directory to its total_steps, reporting each evaluation.

    Args:
        params: Tune's config for this trial: {"env", "setting", "seed"}.
        trials: {trial name: {"run_dir", "config"}} for every trial of the sweep.
        cpus: the CPUs Tune gave the trial: TensorFlow's thread pools are sized to them.
    """
    from common import tfquiet

    sys.unraisablehook = quiet_shutdown_exit
    tfquiet.setup()
    _size_thread_pools(cpus)
    from ray import tune

    from agent.core import config as config_lib
    from agent.run.run_dir import RunDirectory
    from agent.run.loop import TrainingStopped
    from agent.run.trainer import Trainer

    name = trial_name(params["env"], params["setting"], params["seed"])
    trial = trials[name]
    run_dir = Path(trial["run_dir"])
    cfg = config_lib.from_dict(trial["config"], source=f"sweep trial {name}")
    _wait_until_free(run_dir)
    final = final_eval(run_dir, cfg.total_steps)
    if final is not None:  # finished before the sweep was stopped: report, do not train again
        tune.report({"env_step": final["env_step"], METRIC: final["mean"], "final_return_mean": final["mean"]})
        return
    resumed_from = None
    if RunDirectory(run_dir).has_checkpoint():
        trainer = Trainer(cfg, run_dir, resume=True, finished_ok=True)
        resumed_from = trainer.run.state.step
        print(f"resuming {name} from env step {resumed_from:,} (checkpoint {trainer.run.store.last_name})", file=sys.stderr)
    else:
        _clear(run_dir)  # a trial that died before its first checkpoint left nothing to resume
        RunDirectory.create(run_dir)
        trainer = Trainer(cfg, run_dir)
    with trainer:
        hook = ReportToTune(tune.report, resumed_from)
        try:
            result = trainer.train(hooks=[hook])
        except TrainingStopped as e:  # a setting that diverges is a result, not a fault to retry
            tune.report({"env_step": trainer.run.state.step, METRIC: math.nan, "stopped": str(e)})
            return
    final = result.final_eval or {}
    tune.report({"env_step": result.env_steps, METRIC: final.get("mean", math.nan), "final_return_mean": final.get("mean", math.nan),
                 "train_seconds": result.train_seconds})


def _size_thread_pools(cpus: float) -> None:
    """TensorFlow sizes its pools to the machine; a trial given one core of it should use one."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised in this worker (an earlier trial): keep its pools
        pass


def _wait_until_free(run_dir: Path, timeout_s: float = LOCK_WAIT_S) -> None:
    """A worker of a killed sweep may hold the run directory for a moment while it dies: wait for its lock to go."""
    from agent.run.run_dir import RunDirectory

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return RunDirectory(run_dir).check_not_in_use() if run_dir.is_dir() else None
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _clear(run_dir: Path) -> None:
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)
