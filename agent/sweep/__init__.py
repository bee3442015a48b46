"""Sweeps: seeds x settings x envs as Ray Tune trials, each trial a run directory, on this machine or a cluster.

`python -m agent.sweep`. May import: `agent.run`, `agent.plot`, `agent.core`, `envs`, `common`.
Ray is optional (the `cluster` extra) and imported only when a sweep starts.
"""
