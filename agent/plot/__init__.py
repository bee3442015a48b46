"""Learning curves of runs (curves.py) and the statistics that sum seeds up (stats.py: IQM, bootstrap intervals).

`python -m agent.plot RUN_DIR...`. May import: `agent.run` (reading a run), `agent.core`, `common`.
"""
