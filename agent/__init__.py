"""The DQN agent, in layers; each subpackage imports only the ones below it (docs/architecture.md).

    agent.api       DQN: learn / predict / evaluate / save / load (train.py is a client)
    agent.sweep     seeds x settings x envs as Ray Tune trials
    agent.viewer    the pygame window: watch, play yourself
    agent.export    SavedModel / TFLite / ONNX, runtimes without TensorFlow, shipped agents
    agent.plot      learning curves and their statistics (IQM, bootstrap intervals)
    agent.run       the training loop and its hooks, the run directory, checkpoints, logs
    agent.rollout   episodes: evaluation, HUD frames, videos
    agent.dqn       Q-networks (from classic's blocks), acting, the compiled update
    agent.core      config, presets, device and precision, schedules, state files

Below all of them: `classic` (the chapter's models and their blocks), `envs` and
`replay` (numpy only), `common` (errors, atomic files). Package inits stay light
so `agent.core.config` does not pull in TensorFlow.
"""
