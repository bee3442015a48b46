"""Learning curves of runs (curves.py), the statistics that sum seeds up (stats.py: IQM, bootstrap intervals), and
benchmark comparisons (benchmark.py: Atari-100k human-normalised scores beside the papers' published means).

`python -m agent.plot RUN_DIR...` draws curves; `python -m agent.plot stats SCORES.csv` compares a suite's runs
with the published scores. May import: `agent.run` (reading a run), `agent.core`, `common`.
"""
