"""python -m agent.export (agent/export/convert.py, agent/export/runtimes.py) and play.py on an exported model.

Each format is loaded back by its own runtime (tf.saved_model.load, the LiteRT
interpreter of ai-edge-litert, ONNX Runtime) and must give the Keras model's
Q-values within 1e-5 on 100 real env observations, for the MLP (CartPole,
LayerNorm and a dueling head) and the Nature CNN (Breakout, uint8 frames
scaled inside). The networks are untrained but real (built by
agent.networks.build_q_network, saved as train.py saves a run); each is
converted once per module. play.py plays a .tflite and a .onnx file in a
subprocess that must never import TensorFlow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from agent.export import convert as export_lib
from agent.export import runtimes as exported

ROOT = Path(__file__).resolve().parent.parent
NETS = {  # name -> (env id, config overrides)
    "mlp": ("CartPole-v1", {"dueling": True, "layer_norm": True, "hidden_sizes": [32, 32]}),
    "cnn": ("ALE/Breakout-v5", {}),  # the breakout preset: Nature CNN, linear head
}
FORMATS = ("saved_model", "tflite", "onnx")
RUNTIME_MODULES = {"saved_model": None, "tflite": "ai_edge_litert", "onnx": "onnxruntime"}
CONVERTER_MODULES = {"onnx": ("tf2onnx", "onnx")}


def need(fmt: str) -> None:
    """Skip (with the reason) only where the export extra is truly not installed; CI installs it."""
    for module in (RUNTIME_MODULES[fmt], *CONVERTER_MODULES.get(fmt, ())):
        if module is not None:
            pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[export]')")


def make_run(path: Path, env_id: str, overrides: dict) -> Path:
    """A run directory as train.py writes one (config.toml, meta.json, model.keras) holding an untrained network."""
    from agent.run.run_dir import RunDirectory
    from agent.dqn.networks import build_q_network
    from agent.core.presets import resolve_config
    from envs import make_env, obs_signature

    cfg = resolve_config(env_id=env_id, overrides=overrides)
    env = make_env(cfg.env_id, seed=0)
    shape, dtype, n = obs_signature(env)
    env.close()
    model = build_q_network(shape, dtype, n, kind=cfg.network, hidden_sizes=cfg.hidden_sizes, dueling=cfg.dueling, layer_norm=cfg.layer_norm)
    rng = np.random.default_rng(0)
    # biases and LayerNorm's scale/offset start as constants; move them so that every weight shows in the Q-values
    model.set_weights([w + rng.normal(0.0, 0.1, w.shape).astype(w.dtype) if w.ndim == 1 else w for w in model.get_weights()])
    path.mkdir(parents=True, exist_ok=True)
    RunDirectory(path).save_config(cfg)
    RunDirectory(path).save_model(model)
    RunDirectory(path).save_meta({"env_id": cfg.env_id, "obs_shape": list(shape), "obs_dtype": str(dtype), "num_actions": n, "env_step": 0})
    return path


def real_observations(env_id: str, n: int = 100, seed: int = 7) -> np.ndarray:
    """`n` observations of the real env under random actions, from another seed than the export's own check."""
    from envs import make_env

    env = make_env(env_id, seed=seed, mode="play")
    try:
        return export_lib.observations(env, n, seed=seed)
    finally:
        env.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runs")
    return {name: make_run(base / name, env_id, overrides) for name, (env_id, overrides) in NETS.items()}


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[tuple[str, str], export_lib.Result]:
    """Every net in every format whose tools are installed, converted once."""
    out = tmp_path_factory.mktemp("exports")
    results = {}
    for net, run in runs.items():
        for fmt in FORMATS:
            if all(exported.module_available(m) for m in CONVERTER_MODULES.get(fmt, ())):
                suffix = exported.SUFFIXES.get(fmt, "")
                results[net, fmt] = export_lib.export(run, fmt, out / f"{net}{suffix}")
    return results


@pytest.fixture(scope="module")
def reference(runs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per net: 100 real observations and the Keras model's Q-values on them."""
    from agent.run.run_dir import RunDirectory

    refs = {}
    for net, run in runs.items():
        obs = real_observations(NETS[net][0])
        refs[net] = obs, np.asarray(RunDirectory(run).load_model()(obs, training=False))
    return refs


def run_in_its_runtime(path: Path, fmt: str, obs: np.ndarray) -> np.ndarray:
    """Q-values from the exported file, read by its own runtime's API (not through agent.exported)."""
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # held: its functions reference its variables weakly
        return loaded.serve(tf.constant(obs)).numpy()
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        assert inp["dtype"] == obs.dtype and list(inp["shape_signature"]) == [-1, *obs.shape[1:]]
        interpreter.resize_tensor_input(inp["index"], obs.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], obs)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: obs})[0]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("net", NETS)
def test_q_values_match_keras_in_each_runtime(reference, exports, net, fmt):
    need(fmt)
    obs, keras_q = reference[net]
    assert obs.dtype == (np.uint8 if net == "cnn" else np.float32) and len(np.unique(obs, axis=0)) > 50
    q = run_in_its_runtime(exports[net, fmt].path, fmt, obs)
    assert q.shape == keras_q.shape and q.dtype == np.float32
    diff = float(np.abs(q - keras_q).max())
    print(f"{net} {fmt}: max |dQ| {diff:.3g}, max |Q| {np.abs(keras_q).max():.3g}")
    assert diff <= 1e-5
    assert keras_q.std(axis=0).min() > 1e-3  # the Q-values really depend on the observation
    assert exports[net, fmt].max_abs_diff is not None and exports[net, fmt].max_abs_diff <= 1e-5  # the export checked itself too


@pytest.mark.parametrize("net", NETS)
def test_metadata_says_what_to_feed(exports, net):
    fmt = "tflite"
    result = exports[net, fmt]
    assert result.metadata_path == result.path.with_name(result.path.name + ".json")
    meta = json.loads(result.metadata_path.read_text())
    assert exported.read_metadata(result.path) == meta
    if net == "mlp":
        assert meta["env_id"] == "CartPole-v1" and meta["input"] == {"name": "obs", "shape": [None, 4], "dtype": "float32"}
        assert meta["num_actions"] == 2 and meta["action_meanings"] == ["LEFT", "RIGHT"] and meta["play_epsilon"] == 0.0
    else:
        assert meta["env_id"] == "ALE/Breakout-v5" and meta["input"] == {"name": "obs", "shape": [None, 84, 84, 4], "dtype": "uint8"}
        assert meta["action_meanings"] == ["NOOP", "FIRE", "RIGHT", "LEFT"] and meta["play_epsilon"] == 0.05
        assert "84x84" in meta["preprocessing"] and "255" in meta["preprocessing"]
    assert meta["output"] == {"shape": [None, meta["num_actions"]], "dtype": "float32"}
    assert meta["format"] == fmt and meta["model"] == result.path.name and meta["pixels"] is False


def test_onnx_metadata_names_the_graphs_inputs(exports):
    need("onnx")
    import onnxruntime

    meta = exported.read_metadata(exports["mlp", "onnx"].path)
    session = onnxruntime.InferenceSession(str(exports["mlp", "onnx"].path), providers=["CPUExecutionProvider"])
    assert meta["input"]["name"] == session.get_inputs()[0].name and meta["output"]["name"] == session.get_outputs()[0].name


# --------------------------------------------------------------------------- the command line


def invoke(*args) -> object:
    return CliRunner().invoke(export_lib.main, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_default_out_refuses_to_overwrite_and_force_replaces(runs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "meta.json", "model.keras"):
        (run / name).write_bytes((runs["mlp"] / name).read_bytes())
    result = invoke(run, "--format", "saved_model")
    assert result.exit_code == 0, result.output
    out = run / "export" / "saved_model"
    assert (out / "saved_model.pb").is_file() and (run / "export" / "saved_model.json").is_file()
    assert "checked with tf.saved_model.load" in result.output and "on 100 observations of CartPole-v1" in result.output
    first = (out / "saved_model.pb").stat().st_ino

    line = one_error_line(invoke(run, "--format", "saved_model"))
    assert "already exists" in line and "--force" in line
    assert (out / "saved_model.pb").stat().st_ino == first  # untouched

    result = invoke(run, "--format", "saved_model", "--force")
    assert result.exit_code == 0, result.output
    assert (out / "saved_model.pb").stat().st_ino != first
    assert sorted(p.name for p in (run / "export").iterdir()) == ["saved_model", "saved_model.json"]  # no temporary or set-aside copy left


def test_a_model_that_cannot_be_renamed_into_place_leaves_the_previous_pair(runs, tmp_path, monkeypatch):
    import agent.export.convert

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.toml", "meta.json", "model.keras"):
        (run / name).write_bytes((runs["mlp"] / name).read_bytes())
    assert invoke(run, "--format", "saved_model").exit_code == 0
    out, json_file = run / "export" / "saved_model", run / "export" / "saved_model.json"
    json_file.write_text(json_file.read_text().replace('"format_version"', '"format_version_marker": 1, "format_version"'))
    before_json, before_model = json_file.read_bytes(), (out / "saved_model.pb").stat().st_ino
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(dst) == out and Path(src).name.endswith(".tmp"):  # the new model into place; putting the old one back works
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(agent.export.convert.os, "rename", failing_rename)
    result = invoke(run, "--format", "saved_model", "--force")
    assert result.exit_code != 0
    assert json_file.read_bytes() == before_json  # the metadata written for the new model was taken back
    assert (out / "saved_model.pb").stat().st_ino == before_model  # and the old model is where it was
    assert sorted(p.name for p in (run / "export").iterdir()) == ["saved_model", "saved_model.json"]


@pytest.mark.parametrize("args, words", [
    (["{missing}", "--format", "tflite"], ["does not exist"]),
    (["{run}", "--format", "pytorch"], ["unknown format 'pytorch'", "saved_model, tflite, onnx"]),
    (["{run}"], ["pass --format"]),
    (["{run}", "--format", "tflite", "--out", "{tmp}/q.onnx"], ["must end in .tflite"]),
    (["{run}", "--format", "saved_model", "--out", "{tmp}/q.tflite"], ["is a directory", "--format tflite"]),
    (["{run}", "--format", "tflite", "--best"], ["best_model.keras", "drop --best"]),
    (["{tmp}", "--format", "onnx"], ["config.toml is missing"]),
])
def test_cli_bad_input_one_line(runs, tmp_path, args, words):
    filled = [a.format(run=runs["mlp"], tmp=tmp_path, missing=tmp_path / "nope") for a in args]
    line = one_error_line(invoke(*filled))
    for word in words:
        assert word in line, line
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.tflite"))


def test_cli_names_the_missing_onnx_converter(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    line = one_error_line(invoke(runs["mlp"], "--format", "onnx", "--out", tmp_path / "q.onnx"))
    assert "tf2onnx" in line and "pip install '.[export]'" in line
    assert not (tmp_path / "q.onnx").exists()


# --------------------------------------------------------------------------- play.py on an exported model

def play_without_tf(model: Path, *args) -> subprocess.CompletedProcess:
    from entry_points import run_entry_point

    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    return run_entry_point("play", model, "--headless", *args, env=env)


@pytest.mark.parametrize("net, fmt", [("mlp", "tflite"), ("mlp", "onnx"), ("cnn", "onnx")])
def test_play_exported_model_without_tensorflow(runs, exports, tmp_path, net, fmt):
    """A headless episode from the exported file plays the same actions as the run's Keras network, and TensorFlow never loads."""
    need(fmt)
    import play

    steps = 40 if net == "mlp" else 25
    demos = tmp_path / "exported.npz"
    proc = play_without_tf(exports[net, fmt].path, "--episodes", 1, "--max-steps", steps, "--save-demos", demos)
    assert proc.returncode == 0, proc.stderr
    assert "heavy modules loaded: []" in proc.stdout
    assert "episode 1:" in proc.stdout
    keras_demos = tmp_path / "keras.npz"
    result = CliRunner().invoke(play.main, [str(runs[net]), "--headless", "--episodes", "1", "--max-steps", str(steps), "--save-demos", str(keras_demos)])
    assert result.exit_code == 0, result.output
    with np.load(demos) as a, np.load(keras_demos) as b:
        assert len(a["actions"]) > 5
        np.testing.assert_array_equal(a["actions"], b["actions"])  # same observations, same greedy (and epsilon) choices


def test_play_exported_model_errors(exports, tmp_path, monkeypatch):
    import play

    def line(*args) -> str:
        return one_error_line(CliRunner().invoke(play.main, [str(a) for a in args]))

    need("tflite")
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(exports["mlp", "tflite"].path.read_bytes())
    assert "has no lonely.tflite.json beside it" in line(lonely, "--headless")
    assert "drop --best" in line(exports["mlp", "tflite"].path, "--headless", "--best")
    assert "does not exist" in line(tmp_path / "nothing.onnx", "--headless")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    (tmp_path / "broken.tflite.json").write_bytes(exports["mlp", "tflite"].metadata_path.read_bytes())
    assert "not a readable TFLite model" in line(broken, "--headless")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if not installed
    assert "needs ai-edge-litert" in line(exports["mlp", "tflite"].path, "--headless")
