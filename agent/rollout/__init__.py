"""Playing episodes outside training: `EpisodeRunner`, greedy evaluation, HUD frames and videos (no window).

May import: `agent.dqn`, `agent.core`, `envs`, `classic` (the demos format), `common`.
"""
