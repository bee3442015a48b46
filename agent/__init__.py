"""The DQN agent: config, networks, update, schedules, training loop, evaluation, run directories.

Import the pieces from their modules (`agent.dqn`, `agent.training`, ...);
this package init stays light so `agent.config` does not pull in TensorFlow.
"""
