"""Sweeps: seeds x settings x envs as Ray Tune trials, each trial a run directory, on this machine or a cluster.

`python -m agent.sweep` (cli.py: the command and its sweep file). Its modules, each on those below it:
cli.py -> tuner.py (the Tune experiment, ASHA, progress lines) -> trial.py (one trial in a Ray worker:
train or resume its run directory, report each evaluation) -> state.py (DIR/sweep.json, resuming,
finished trials) -> plan.py (the spec, the grid's settings, the trials and their names, checked before
Ray starts); cli.py also uses cluster.py (Ray's version floor, the cluster address, starting Ray),
summary.py (summary.csv, IQM and 95% CI, curves.png) and suite.py (`--suite atari100k`: a benchmark's games,
preset and steps as one sweep, and its per-game, per-seed scores.csv).
May import: `agent.run`, `agent.plot`, `agent.core`, `envs`, `common`.
Ray is optional (the `cluster` extra) and imported only inside functions, when a sweep starts.
"""
