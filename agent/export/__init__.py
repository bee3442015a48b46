"""A trained network outside its run: SavedModel / TFLite / ONNX export, runtimes without TensorFlow, shipped agents.

`python -m agent.export RUN_DIR` (convert.py). May import: `agent.run` (reading a run),
`agent.dqn`, `agent.core`, `envs`, `common`.
"""
