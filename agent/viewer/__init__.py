"""The pygame window: watch an agent play (a run, an export or a shipped agent), play yourself, record.

May import: `agent.export` (exported runtimes, shipped agents), `agent.run` (reading a run),
`agent.rollout`, `agent.dqn`, `agent.core`, `envs`, `classic`, `common`.
"""
