"""The driver's side of Ray Tune: the Tuner over the trials (a new experiment, or Tune's restore of DIR/tune), ASHA
with --search, and one line per trial event on stdout instead of Tune's tables. Ray must be started (agent.sweep.cluster).
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from agent.sweep.plan import SweepSpec, Trial, trial_name
from agent.sweep.state import EXPERIMENT
from agent.sweep.trial import METRIC, run_trial


def _progress_callback():
    """One line per trial event on stdout instead of Tune's tables (a Tune Callback, defined here so that importing this module needs no Ray)."""
    from ray import tune

    class _ProgressLines(tune.Callback):
        def __init__(self):
            self.resumes: set[tuple[str, int]] = set()

        def on_trial_start(self, iteration, trials, trial, **info):
            click.echo(f"start    {_name(trial)}")

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "resumed_from" in result:
                if (trial.trial_id, result["resumed_from"]) not in self.resumes:
                    self.resumes.add((trial.trial_id, result["resumed_from"]))
                    click.echo(f"resume   {_name(trial)} from its checkpoint at env step {result['resumed_from']:,}")
            elif "final_return_mean" in result:
                click.echo(f"finished {_name(trial)}: final {result['final_return_mean']:.1f} at env step {result['env_step']:,}")
            elif "stopped" in result:
                click.echo(f"stopped  {_name(trial)}: {result['stopped']}")
            elif METRIC in result:
                click.echo(f"eval     {_name(trial)}: env step {result['env_step']:,}  return {result[METRIC]:.1f} "
                           f"+/- {result.get('eval_return_std', 0):.1f}  ({result.get('train_seconds', 0):.0f} s training)")

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if "final_return_mean" not in last and "stopped" not in last and "env_step" in last:
                click.echo(f"stopped  {_name(trial)} by ASHA at env step {last['env_step']:,}: its evaluation return trails the others'")

        def on_trial_recover(self, iteration, trials, trial, **info):
            click.echo(f"retry    {_name(trial)}: {_last_line(trial.error_file)}; it resumes from its last checkpoint")

        def on_trial_error(self, iteration, trials, trial, **info):
            click.echo(f"failed   {_name(trial)}: {_last_line(trial.error_file)}")

    return _ProgressLines()


def _name(trial) -> str:
    c = trial.config
    return trial_name(c["env"], c["setting"], c["seed"])


def name_trial(trial) -> str:
    """Tune's trial (and trial directory) name: the run directory's."""
    return _name(trial)


def _last_line(path) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, TypeError):
        return "the trial's process ended"
    return lines[-1] if lines else "the trial's process ended"


def _error_text(error) -> str:
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_sweep(spec: SweepSpec, trials: list[Trial], out: Path, *, cpus_per_trial: float = 1, max_failures: int = 3) -> dict[tuple, dict]:
    """Run (or restore and finish) the trials with Ray Tune; Ray must be started.

    Returns:
        {trial key: {"status", "error", "metrics"}} from Tune's results.
    """
    from ray import tune

    table = {t.name: {"run_dir": str(out / t.name), "config": t.config} for t in trials}
    trainable = tune.with_resources(tune.with_parameters(run_trial, trials=table, cpus=cpus_per_trial), {"cpu": cpus_per_trial})
    experiment = out / EXPERIMENT
    if tune.Tuner.can_restore(str(experiment)):
        # Tune's own restore: finished trials stay finished, the others run again, and each resumes its run directory.
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, resume_errored=False, restart_errored=True)
    else:
        # The trials are the product of envs, settings and seeds (plan() builds them so), in the sweep's order.
        space = {"env": tune.grid_search(list(dict.fromkeys(t.env_id for t in trials))),
                 "setting": tune.grid_search(list(dict.fromkeys(t.setting for t in trials))),
                 "seed": tune.grid_search(list(dict.fromkeys(t.seed for t in trials)))}
        scheduler = None
        if spec.search:
            total = trials[0].config["total_steps"]
            every = trials[0].config["eval_every"]
            grace = max(every, math.ceil(total / 9 / every) * every)
            # stop_last_trials=False: a trial that reaches total_steps writes its final evaluation, never cut at max_t
            scheduler = tune.schedulers.ASHAScheduler(time_attr="env_step", max_t=total, grace_period=min(grace, total), reduction_factor=3,
                                                      stop_last_trials=False)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, trial_name_creator=name_trial,
                                        trial_dirname_creator=name_trial),
            run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), failure_config=tune.FailureConfig(max_failures=max_failures),
                                      verbose=0, callbacks=[_progress_callback()]),
        )
    grid = tuner.fit()
    outcome = {}
    for result in grid:
        c = result.config or {}
        if not c:
            continue
        status = "ERROR" if result.error is not None else "TERMINATED"
        outcome[(c["env"], c["setting"], c["seed"])] = {"status": status, "error": _error_text(result.error), "metrics": result.metrics or {}}
    # What Tune saved is what a restore would resume: a trial it saved as neither TERMINATED (finished, or
    # stopped by ASHA) nor ERROR was cut short by Ctrl-C/SIGTERM (in memory, Tune marks those TERMINATED too).
    saved = tune.ExperimentAnalysis(str(experiment)).trials
    return {"trials": outcome, "interrupted": any(t.status not in ("TERMINATED", "ERROR") for t in saved)}
