"""Export a run's Q-network to run outside this app: a TensorFlow SavedModel, a TFLite (LiteRT) file or ONNX.

    python -m agent.export RUN --format tflite              RUN/export/model.tflite and model.tflite.json
    python -m agent.export RUN --format onnx --out q.onnx   q.onnx and q.onnx.json
    python -m agent.export RUN --format saved_model --best  RUN/export/best_saved_model/ from best_model.keras

All three come from Keras 3's own `model.export`: "tf_saved_model"; "litert"
(TFLiteConverter.from_saved_model, restricted here to TFLite's builtin ops so
the file runs in LiteRT without TensorFlow); "onnx" (through tf2onnx, an
optional extra: `pip install '.[export]'`). The network eats raw
observations (Atari: uint8, scaled by 1/255 inside), so an exported model
needs no preprocessing beyond the env's own wrappers, which
`<model>.json` beside it describes (agent/export/runtimes.py).

Before the output is renamed into place it is loaded back in its own runtime
(tf.saved_model.load, the LiteRT interpreter, ONNX Runtime) and its
Q-values compared with the Keras model's on 100 observations of the run's
env; a model that disagrees is not saved. Where the runtime is not
installed the check is skipped and said so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from agent.export import runtimes as exported
from common.files import atomic_write_bytes
from common.errors import UserError, cli_errors, command

FORMATS = ("saved_model", "tflite", "onnx")
ALIASES = {"litert": "tflite", "tf_saved_model": "saved_model", "savedmodel": "saved_model"}
KERAS_FORMATS = {"saved_model": "tf_saved_model", "tflite": "litert", "onnx": "onnx"}
CONVERTERS = {"onnx": ("tf2onnx", "onnx")}  # modules a format's conversion needs beyond TensorFlow
CHECK_OBSERVATIONS = 100
CHECK_RTOL = 1e-4  # of the largest |Q|: float32 rounding is ~1e-7 of it; a wrong conversion is off by the Q-values themselves


@dataclass(frozen=True)
class Plan:
    """What to export where; everything in it was checked without loading TensorFlow."""

    run_dir: Path
    fmt: str  # "saved_model", "tflite" or "onnx"
    out: Path  # the model file (a directory for saved_model); `<out>.json` goes beside it
    which: str  # "final" (model.keras) or "best" (best_model.keras)
    force: bool  # replace an existing output


@dataclass(frozen=True)
class Result:
    path: Path
    metadata_path: Path
    max_abs_diff: float | None  # max |Q_exported - Q_keras| over the check's observations; None: not checked
    max_abs_q: float  # max |Q_keras| there, for scale
    checked_with: str  # the runtime that loaded the model back, or why it was not checked


def resolve_format(fmt: str | None, out: str | Path | None) -> str:
    """The format asked for (aliases such as "litert" allowed), or the one `--out`'s suffix names."""
    if fmt is None:
        guessed = exported.file_format(out) if out is not None else None
        if guessed is None:
            raise UserError(f"pass --format {'|'.join(FORMATS)} (or an --out ending in .tflite or .onnx)")
        return guessed
    name = ALIASES.get(fmt.lower(), fmt.lower())
    if name not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return name


def default_out(run_dir: Path, fmt: str, which: str) -> Path:
    """RUN/export/model.tflite, model.onnx or saved_model/ (best_model.tflite, ... with --best)."""
    from agent.run.run_dir import RunDirectory

    return RunDirectory(run_dir).export_path(which, "" if fmt == "saved_model" else exported.SUFFIXES[fmt])


def plan_export(run_dir: str | Path, fmt: str | None = None, out: str | Path | None = None, *, best: bool = False, force: bool = False) -> Plan:
    """Check the request before any slow loading: the run, the format, the output path, the converter's packages.

    Raises:
        UserError: for anything a person can fix, named in one line.
    """
    from agent.run.run_dir import RunDirectory

    fmt = resolve_format(fmt, out)
    run_dir = Path(run_dir)
    run = RunDirectory(run_dir)
    run.load_config()  # a run directory at all, with a readable config
    run.load_meta()
    which = "best" if best else "final"
    if not run.has_model(which):
        hint = " (no evaluation has saved one yet; drop --best)" if best else "; was training interrupted before the first save?"
        raise UserError(f"{str(run_dir)!r} holds no {run.model_path(which).name}{hint}")
    out = Path(out) if out is not None else default_out(run_dir, fmt, which)
    suffix = exported.SUFFIXES.get(fmt)
    if suffix and out.suffix.lower() != suffix:
        raise UserError(f"--out for {fmt} must end in {suffix}, got {str(out)!r}")
    if fmt == "saved_model" and exported.file_format(out):
        raise UserError(f"a SavedModel is a directory; --out {str(out)!r} names a .{exported.file_format(out)} file (did you mean --format {exported.file_format(out)}?)")
    meta_path = exported.metadata_path(out)
    if not force:
        for path in (out, meta_path):
            if path.exists():
                raise UserError(f"{str(path)!r} already exists; choose another --out or pass --force to replace it")
    elif out.exists() and out.is_dir() != (fmt == "saved_model"):
        kind = "directory" if out.is_dir() else "file"
        raise UserError(f"{str(out)!r} is a {kind}; --force replaces an earlier export of the same kind only, choose another --out")
    missing = [name for name in CONVERTERS.get(fmt, ()) if not exported.module_available(name)]
    if missing:
        raise UserError(f"{fmt} export needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: {exported.install_hint(*missing)}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out.parent, prefix=".write-test-")
        probe.close()
    except OSError as e:
        raise UserError(f"cannot write to {str(out.parent)!r}: {e.strerror or e}") from None
    return Plan(run_dir, fmt, out, which, force)


def export(run_dir: str | Path, fmt: str | None = None, out: str | Path | None = None, *, best: bool = False, force: bool = False) -> Result:
    """Export a run's network (`plan_export` then `run_export`); see the module docstring."""
    return run_export(plan_export(run_dir, fmt, out, best=best, force=force))


def observations(env, n: int, seed: int = 0) -> np.ndarray:
    """`n` real observations of `env` under uniformly random actions, episodes reset as they end."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    seen = []
    while len(seen) < n:
        seen.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.stack(seen)


def run_export(plan: Plan) -> Result:
    """Convert, load back and compare, then write the metadata beside the output and rename the model into place.

    Raises:
        UserError: for a damaged model, one made for another env, or an export whose Q-values disagree.
    """
    from agent.core.config import env_options
    from agent.dqn.recurrent import is_recurrent, q_network_signature
    from agent.run.run_dir import RunDirectory
    from envs import EnvError, make_env

    run = RunDirectory(plan.run_dir)
    cfg = run.load_config()
    run_meta = run.load_meta()
    model = run.load_model(plan.which)
    try:
        env = make_env(cfg.env_id, seed=cfg.seed, mode="play", **env_options(cfg))
    except EnvError as e:
        raise UserError(str(e)) from None
    recurrent = is_recurrent(model)
    try:
        obs_shape, n = tuple(env.observation_space.shape), int(env.action_space.n)
        takes, gives = q_network_signature(model)
        if takes != obs_shape or gives != n:
            raise UserError(f"the model in {str(plan.run_dir)!r} takes {takes} and gives {gives} Q-values, "
                            f"but {cfg.env_id} gives observations {obs_shape} and has {n} actions; the run directory is damaged")
        meta = metadata(plan, cfg, run_meta, env)
        if recurrent:
            meta["recurrent"] = recurrent_metadata(model)
        obs = observations(env, CHECK_OBSERVATIONS, seed=cfg.seed)  # recurrent: stepped through in order, the state carried
    finally:
        env.close()
    reference = keras_q_values(model, obs, recurrent)
    json_path = exported.metadata_path(plan.out)
    previous_json = json_path.read_bytes() if json_path.is_file() else None
    metadata_path = None
    try:
        with staged(plan.out, directory=plan.fmt == "saved_model") as tmp:
            convert(model, tmp, plan.fmt)
            if plan.fmt == "onnx":
                meta["input"]["name"], meta["output"]["name"] = onnx_io_names(tmp)
            diff, checked_with = check(tmp, plan.fmt, obs, reference, recurrent)
            # The metadata goes first (atomically), then the model's rename into place; should that fail, the
            # previous metadata is put back, so the model and its .json always belong together.
            metadata_path = exported.write_metadata(plan.out, meta)
    except BaseException:
        if metadata_path is not None:
            if previous_json is None:
                json_path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(json_path, previous_json)
        raise
    return Result(plan.out, metadata_path, diff, float(np.abs(reference).max()), checked_with)


def keras_q_values(model, obs: np.ndarray, recurrent: bool) -> np.ndarray:
    """The Keras model's Q-values of `obs`: a batch at once, or for a recurrent network one step per observation
    from the zero state, the state carried (`agent.dqn.recurrent`), as a player would step through an episode."""
    from agent.dqn.policies import RecurrentQFn
    from agent.dqn.recurrent import keras_step, lstm_units

    if not recurrent:
        return np.asarray(model(obs, training=False))
    return RecurrentQFn(keras_step(model), lstm_units(model)).steps(obs)


def recurrent_metadata(model) -> dict:
    """What a runtime needs to step a recurrent export (`<model>.json`'s "recurrent")."""
    from agent.dqn.recurrent import lstm_units

    units = lstm_units(model)
    return {"units": units, "inputs": ["obs", "h", "c"], "outputs": ["q", "h", "c"],
            "state": f"h and c: float32 [batch, {units}] each, zeros at each episode's start; feed back the h and c it returns"}


def convert(model, path: Path, fmt: str) -> None:
    """Keras' `model.export` in the format asked for, its converters' chatter kept off the terminal."""
    import tensorflow as tf

    options = {}
    if fmt == "tflite":
        # Builtin ops only: with SELECT_TF_OPS (Keras' default) a model could need the Flex delegate, that is TensorFlow, to run.
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    try:
        with warnings.catch_warnings(), exported.quiet_stderr():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
            model.export(str(path), format=KERAS_FORMATS[fmt], verbose=False, **options)
    except Exception as e:  # the converters raise many types (ConverterError, ValueError, tf2onnx's own)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"the {fmt} conversion failed ({type(e).__name__}: {first[:200]})") from None


def onnx_io_names(path: Path) -> tuple[str, str]:
    import onnx

    graph = onnx.load(str(path)).graph
    return graph.input[0].name, graph.output[0].name


def check(path: Path, fmt: str, obs: np.ndarray, reference: np.ndarray, recurrent: bool = False) -> tuple[float | None, str]:
    """Load the export in its own runtime and compare its Q-values with the Keras model's (a `recurrent` step function's
    stepped through `obs` from the zero state, as `keras_q_values` did).

    Returns:
        (max |difference|, the runtime), or (None, why it was not checked).

    Raises:
        UserError: if they differ by more than CHECK_RTOL of the largest |Q|.
    """
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept in a name: its functions hold only weak references to its variables
        q = saved_model_q_fn(loaded).steps(obs) if recurrent else loaded.serve(tf.constant(obs)).numpy()
        runtime = "tf.saved_model.load"
    else:
        reason = exported.runtime_missing(fmt)
        if reason:
            return None, f"not checked: {reason}"
        q_fn = exported.load_q_fn(path, fmt)  # a recurrent export's: a RecurrentQFn, stepped through `obs` as Keras was
        q = q_fn.steps(obs) if recurrent else q_fn(obs)
        runtime = {"tflite": "the LiteRT interpreter (ai-edge-litert)", "onnx": "ONNX Runtime"}[fmt]
    diff = float(np.abs(np.asarray(q, dtype=np.float64) - reference).max())
    tolerance = CHECK_RTOL * max(1.0, float(np.abs(reference).max()))
    if not diff <= tolerance:  # also catches NaN
        raise UserError(f"the {fmt} model's Q-values differ from the Keras model's by up to {diff:.3g} (more than {tolerance:.3g}) "
                        f"on {len(obs)} observations; nothing was saved")
    return diff, runtime


def saved_model_q_fn(loaded):
    """A recurrent SavedModel's `serve([obs, h, c])` as a `RecurrentQFn`."""
    import tensorflow as tf

    from agent.dqn.policies import RecurrentQFn

    def step(obs: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, h, c = loaded.serve([tf.constant(obs), tf.constant(carry[:, 0]), tf.constant(carry[:, 1])])
        return q.numpy(), np.stack([h.numpy(), c.numpy()], axis=1)

    return RecurrentQFn(step, int(loaded.signatures["serving_default"].structured_input_signature[1]["h"].shape[-1]))


def metadata(plan: Plan, cfg, run_meta: dict, env) -> dict:
    """What `<model>.json` says (agent/export/runtimes.py reads it)."""
    from agent.dqn.policies import default_epsilon
    from agent.run.run_dir import RunDirectory
    from envs import action_names

    obs_shape, dtype, n = tuple(env.observation_space.shape), np.dtype(env.observation_space.dtype), int(env.action_space.n)
    meta = {
        "format": plan.fmt,
        "model": plan.out.name,
        "env_id": cfg.env_id,
        "pixels": cfg.pixels,
        "pixel_view": cfg.pixel_view,
        "action_repeat": cfg.action_repeat,
        "observe": cfg.observe,
        "frame_stack": cfg.frame_stack,
        "input": {"name": "obs", "shape": [None, *obs_shape], "dtype": str(dtype)},
        "output": {"shape": [None, n], "dtype": "float32"},
        "num_actions": n,
        "action_meanings": action_names(env),
        "preprocessing": preprocessing_note(cfg, obs_shape, dtype),
        "greedy_action": "the argmax of the output",
        "play_epsilon": default_epsilon(cfg.env_id),  # play.py's chance of a random action (Atari: 0.05, a greedy agent can stall)
        "source": {"run_dir": str(plan.run_dir.resolve()), "model": RunDirectory.MODELS[plan.which],
                   "env_step": run_meta.get("env_step")},
    }
    if plan.fmt == "saved_model":
        meta["endpoint"] = "serve"  # tf.saved_model.load(path).serve(obs); also the serving_default signature
    return meta


def preprocessing_note(cfg, obs_shape: tuple[int, ...], dtype: np.dtype) -> str:
    from envs import is_atari

    if is_atari(cfg.env_id):
        return ("envs.make_env's Atari wrappers (Mnih et al. 2015): up to 30 no-op frames at reset, each action repeated 4 frames "
                "with the last two max-pooled, ALE's grayscale screen resized to 84x84 (cv2.INTER_AREA), the last 4 frames stacked "
                "newest last, uint8 0..255 channels-last; FIRE after reset and after each lost life. The network divides by 255 itself: "
                "feed the raw uint8 stack.")
    repeat = (f" Each action is taken for {cfg.action_repeat} env steps (envs.ActionRepeat): ask for one every "
              f"{cfg.action_repeat}th step.") if cfg.action_repeat != 1 else ""
    if cfg.pixels:
        return (f"the env's rendered frames in gray, resized to 84x84 (cv2.INTER_AREA, view {cfg.pixel_view!r}), the last 4 stacked "
                "newest last, uint8 0..255 channels-last (envs/pixels.py). The network divides by 255 itself: feed the raw uint8 stack." + repeat)
    return (f"none: the env's own observation vector, {dtype} {tuple(obs_shape)}, as gymnasium returns it "
            "(CartPole: cart position, cart velocity, pole angle, pole angular velocity)." + repeat)


@contextmanager
def staged(path: Path, *, directory: bool) -> Iterator[Path]:
    """A temporary file (or directory) beside `path` that replaces it only once the block succeeds."""
    if not directory:
        from common.files import atomic_path

        with atomic_path(path) as tmp:
            yield tmp
        return
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        aside = None
        if path.exists():  # --force: the old one goes only once the new one is in place
            aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
            os.rename(path, aside)
        try:
            os.rename(tmp, path)
        except BaseException:
            if aside is not None:
                os.rename(aside, path)  # the old one back where it was
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", default=None, metavar="saved_model|tflite|onnx",
              help="What to write: a TensorFlow SavedModel (directory), a TFLite/LiteRT file, or ONNX (needs the export extra).  "
                   "[default: from --out's suffix]")
@click.option("--out", type=click.Path(), default=None, help="Where to write it; <out>.json is written beside it.  "
              "[default: RUN/export/model.tflite, model.onnx or saved_model/]")
@click.option("--best", is_flag=True, help="Export the run's best evaluated network (best_model.keras) instead of its final one.")
@click.option("--force", is_flag=True, help="Replace an existing export at --out.")
@cli_errors()
def main(run_dir: str, fmt: str | None, out: str | None, best: bool, force: bool) -> None:
    """Export the Q-network of RUN_DIR (written by train.py) for use outside this app."""
    plan = plan_export(run_dir, fmt, out, best=best, force=force)  # before TensorFlow loads: mistakes are answered at once
    from common import tfquiet

    tfquiet.setup()
    result = run_export(plan)
    click.echo(f"saved {result.path} ({plan.fmt}) and {result.metadata_path}")
    if result.max_abs_diff is None:
        click.echo(result.checked_with)
    else:
        click.echo(f"checked with {result.checked_with}: Q-values within {result.max_abs_diff:.2g} of the Keras model's "
                   f"(largest |Q| {result.max_abs_q:.3g}) on {CHECK_OBSERVATIONS} observations of {exported.read_metadata(result.path)['env_id']}")
    if plan.fmt in exported.SUFFIXES:
        click.echo(f"watch it without TensorFlow: {command('play')} {result.path}")


if __name__ == "__main__":
    main()
