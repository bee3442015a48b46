"""A training run: the loop and its hooks, the learner, the run directory, checkpoints, logs, signals.

`RunDirectory` (run_dir.py) owns the files of a run; nothing outside it names one.
May import: `agent.rollout`, `agent.dqn`, `agent.core`, `replay`, `envs`, `classic`, `common`.
"""
