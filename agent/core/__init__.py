"""The ground floor: the run's config (`DQNConfig`) and presets, device and precision, schedules, state files.

May import: `common`, `envs` (env ids and kinds only), the standard library and numpy. Nothing
here imports TensorFlow at module level, so reading a config or a preset stays fast.
"""
