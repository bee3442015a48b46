"""Every file the project reads, fuzzed (issue 35, item 2): truncated, bit-flipped, wrong-typed and oversized inputs.

Each reader either accepts what it is given or refuses it with a `UserError` (ClassicError and
CheckpointError included: what the command lines catch) whose message is one line naming the file
(or `--set`), never numpy's advice to unpickle, and nothing is written beside the file. Any other
exception fails the test with hypothesis's smallest example.

Property-based with hypothesis: FUZZ_EXAMPLES examples per reader in the fast tier (default 20),
FUZZ_EXAMPLES_SLOW (default 500) under `-m slow`. The counts that ran, and how many of them some
reader refused, are printed at the end of the module (`examples run per reader (refused): ...`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import math
import os
import random
import shutil
import tempfile
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra import numpy as hnp

from agent.core import config as config_lib
from agent.core.presets import resolve_config
from common.errors import UserError

FAST = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SLOW = int(os.environ.get("FUZZ_EXAMPLES_SLOW", "500"))
TIERS = [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)]
BANNED = ("allow_pickle", "pickle.load")  # numpy's advice to unpickle a file from elsewhere
RAN: collections.Counter = collections.Counter()  # examples run per reader
REFUSED: collections.Counter = collections.Counter()  # of which some read ended in a UserError (the others were accepted)
_refused = [False]
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / f"hypothesis-{os.getuid()}")  # its caches go there, not into the checkout


def fuzz(reader: str, examples: int, strategy, check) -> None:
    """Run `check` on `examples` draws of `strategy` (no example database: nothing is written in the checkout)."""

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(strategy)
    def prop(case):
        _refused[0] = False
        check(case)
        RAN[reader] += 1
        REFUSED[reader] += _refused[0]

    prop()


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and RAN:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\nexamples run per reader (refused): " + ", ".join(f"{k} {v} ({REFUSED[k]})" for k, v in sorted(RAN.items())))


def tree(root: Path) -> dict:
    """Every path under `root` with its size and modification time: a write anywhere shows."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")]}


def read(call, names: str, watch: Path):
    """`call()` may succeed; else it raises a UserError of one line naming `names`, no unpickling hint; `watch` is unchanged."""
    before = tree(watch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning printed on the way is output a refusal must not have
        try:
            result = call()
        except UserError as e:
            message = str(e)
            assert len(message.splitlines()) == 1 and message.strip(), repr(message[:2000])
            assert names in message, message[:2000]
            assert not any(b in message for b in BANNED), message[:2000]
            result = e
            _refused[0] = True
    assert tree(watch) == before, "a reader wrote"
    return result


@contextlib.contextmanager
def case_dir(root: Path):
    """A fresh directory per example (hypothesis runs many examples in one test call)."""
    path = Path(tempfile.mkdtemp(dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- strategies


@st.composite
def damaged_bytes(draw, data: bytes) -> bytes:
    """`data` truncated, bit-flipped, overwritten, with bytes inserted, grown large, or replaced by garbage."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "grow", "garbage"]))
    if kind == "truncate":
        return data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "flip":
        out = bytearray(data)
        for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=8)):
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out)
    pos = draw(st.integers(0, len(data)))
    chunk = draw(st.binary(min_size=1, max_size=64))
    if kind == "overwrite":
        return data[:pos] + chunk + data[pos + len(chunk):]
    if kind == "insert":
        return data[:pos] + chunk + data[pos:]
    if kind == "grow":
        return data[:pos] + chunk * draw(st.integers(1, 50_000)) + data[pos:]
    return draw(st.binary(max_size=4096))


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, -(10**400)]),
                         st.floats(), st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)
SENTINEL = "\x00oversized\x00"
SENTINELS = st.just(SENTINEL)


@st.composite
def oversized_text(draw, toml: bool = False) -> str:
    """A value no writer of ours makes: deeply nested, a number of thousands of digits, a huge string or list."""
    n = draw(st.integers(1_000, 100_000))
    kind = draw(st.sampled_from(["deep_list", "deep_table", "long_int", "long_float", "long_string", "long_list"]))
    if kind == "deep_list":
        return "[" * n + "]" * n
    if kind == "deep_table":
        return ("{a = " if toml else '{"a": ') * n + "1" + "}" * n
    if kind == "long_int":
        return "1" * draw(st.integers(300, 6_000))
    if kind == "long_float":
        return "1" * draw(st.integers(300, 6_000)) + ".5e" + "9" * draw(st.integers(1, 400))
    if kind == "long_string":
        return json.dumps("x" * n * 10)
    return "[" + ", ".join(["64"] * n) + "]"


EXTREME_NUMBERS = st.sampled_from([math.inf, -math.inf, math.nan, 10**400, -(10**400), 2**64, 2**63, -1, 0, 0.5, -0.5, 1e308, 5e-324])


def same_kind(old, scalars):
    """Values of the kind of `old` that a writer of ours would never make: what a type check lets through."""
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        return EXTREME_NUMBERS
    if isinstance(old, list):
        return st.lists(EXTREME_NUMBERS | scalars, max_size=6)
    if isinstance(old, dict):
        return st.dictionaries(st.text(max_size=8), EXTREME_NUMBERS | scalars, max_size=4)
    if isinstance(old, str):
        return st.text(max_size=30) | st.sampled_from(["", "\n", "\x00", "<f4", "|O", "float32", "object"])
    return scalars


@st.composite
def retyped(draw, base, values=JSON_VALUES, keys=st.text(max_size=12), scalars=JSON_SCALARS):
    """`base` with 1-3 values replaced by others of any type (or of the same kind, out of range), keys deleted or added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        path, node = (), doc  # walk down from the root, a random child at each level: every table's keys get their turn
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 4)) > 0:
            step = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
            path, node = (*path, step), node[step]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            doc = draw(values) if action == "replace" else doc
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if action == "replace":
            parent[path[-1]] = draw(values if values is SENTINELS else values | same_kind(parent[path[-1]], scalars))
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(values)
        else:
            parent.append(draw(values))
    return doc


@st.composite
def json_files(draw, base) -> bytes:
    """A JSON file like `base` (parsed), damaged: its bytes, its values' types, or one value oversized."""
    kind = draw(st.sampled_from(["bytes", "typed", "oversized"]))
    if kind == "bytes":
        return draw(damaged_bytes(json.dumps(base, indent=1).encode()))
    if kind == "typed":
        return json.dumps(draw(retyped(base))).encode()
    doc = draw(retyped(base, values=SENTINELS))
    return json.dumps(doc).replace(json.dumps(SENTINEL), draw(oversized_text()), 1).encode()


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's string escapes are TOML's basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc) -> str:
    if not isinstance(doc, dict):
        return f"value = {toml_value(doc)}\n"
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items())


TOML_SCALARS = st.one_of(st.booleans(), st.integers(), st.sampled_from([2**63, 10**400, -(10**400)]), st.floats(), st.text(max_size=20))
TOML_VALUES = st.recursive(TOML_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)


@st.composite
def toml_files(draw, base: dict, keys=st.text(max_size=12)) -> bytes:
    """A TOML file like `base` (parsed), damaged: its bytes, its values' types (keys of `keys` added), or one value oversized."""
    kind = draw(st.sampled_from(["bytes", "typed", "oversized"]))
    if kind == "bytes":
        return draw(damaged_bytes(to_toml(base).encode()))
    if kind == "typed":
        return to_toml(draw(retyped(base, values=TOML_VALUES, keys=keys, scalars=TOML_SCALARS))).encode()
    doc = dict(base)
    doc[draw(st.sampled_from(sorted(doc)) | keys)] = SENTINEL
    return to_toml(doc).replace(json.dumps(SENTINEL), draw(oversized_text(toml=True)), 1).encode()


# --------------------------------------------------------------------------- config TOML and --set

FIELDS = st.sampled_from(config_lib.FIELD_NAMES)
CARTPOLE = config_lib.load_toml(config_lib.preset_path("cartpole"))


@pytest.mark.parametrize("examples", TIERS)
def test_config_toml(examples, tmp_path):
    def check(data: bytes):
        with case_dir(tmp_path) as d:
            path = d / "config.toml"
            path.write_bytes(data)
            read(lambda: resolve_config(config_file=path), path.name, d)
            read(lambda: config_lib.from_dict(config_lib.load_toml(path), source=str(path)), path.name, d)

    fuzz("config TOML", examples, toml_files(CARTPOLE, keys=FIELDS | st.text(max_size=12)), check)


NUMBERISH = st.sampled_from(["1e999", "-1e999", "nan", "inf", "1" * 400, "1" * 5000, "1_000", "0x10", "[1,2]", "(3)", "none", "true",
                             "\u0663", "1e-400", " 7 ", "", "=", "[" * 2000, "64," * 5000])
SET_VALUES = st.one_of(NUMBERISH, st.text(max_size=30), JSON_SCALARS.map(str))


@pytest.mark.parametrize("examples", TIERS)
def test_set_values(examples, tmp_path):
    pair = st.tuples(FIELDS | st.text(max_size=12), SET_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")

    def check(pairs):
        read(lambda: resolve_config(env_id="CartPole-v1", overrides=config_lib.parse_overrides(pairs)), "--set", tmp_path)

    fuzz("--set values", examples, st.lists(pair | st.text(max_size=20), min_size=1, max_size=4), check)


# --------------------------------------------------------------------------- demos .npz

DEMO_DTYPES = st.sampled_from(["f4", "f8", "f2", "i8", "i1", "u8", "u1", "?", "c8", "U5", "S3", "M8[s]", "m8[s]"])


@pytest.fixture(scope="module")
def demos_file(tmp_path_factory) -> bytes:
    """A valid CartPole demos file (DemoRecorder, as play.py --save-demos writes it), as bytes."""
    from classic.demos import DemoRecorder

    env, rec = gym.make("CartPole-v1"), DemoRecorder("CartPole-v1")
    obs, _ = env.reset(seed=0)
    for t in range(30):
        next_obs, r, terminated, truncated, _ = env.step(t % 2)
        rec.add(obs, t % 2, r, terminated, truncated)
        obs = next_obs if not (terminated or truncated) else env.reset()[0]
    rec.cut()
    path = tmp_path_factory.mktemp("demos") / "demos.npz"
    rec.save(path, env.observation_space.shape, env.observation_space.dtype)
    return path.read_bytes()


@st.composite
def demo_arrays(draw, arrays: dict) -> dict:
    """The demos' arrays with one to three changed: dropped, of another dtype/shape, other values, pickled objects, too many rows."""
    arrays, n = dict(arrays), len(arrays["actions"])
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from([*arrays, "lives", "pixel_view", "action_repeat", "extra"]))
        kind = draw(st.sampled_from(["drop", "retype", "values", "objects", "rows", "env_id"]))
        old = arrays.get(key, np.zeros(n, np.int64))
        if kind == "drop":
            arrays.pop(key, None)
        elif kind == "retype":
            arrays[key] = draw(hnp.arrays(DEMO_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)))
        elif kind == "values" and old.dtype.kind in "biufcUS":
            arrays[key] = draw(hnp.arrays(old.dtype, old.shape))
        elif kind == "objects":
            arrays[key] = np.array([{"a": 1}, None], dtype=object)
        elif kind == "rows" and old.ndim:
            arrays[key] = np.repeat(old, draw(st.integers(2, 3_000)), axis=0)
        elif kind == "env_id":
            arrays["env_id"] = np.array(draw(st.sampled_from(["MountainCar-v0", "Acrobot-v1", "CartPole-v0", "NoSuchEnv-v0", ""]) | st.text(max_size=20)))
    return arrays


@pytest.mark.parametrize("examples", TIERS)
def test_demos_npz(examples, tmp_path, demos_file):
    from agent.run.demos import load_for_run, training_transitions
    from classic.demos import load_demos

    with np.load(io.BytesIO(demos_file)) as f:
        pristine = {k: f[k] for k in f.files}
    cfg = resolve_config(env_id="CartPole-v1")

    def check(case):
        with case_dir(tmp_path) as d:
            path = d / "demos.npz"
            if isinstance(case, bytes):
                path.write_bytes(case)
            else:
                with open(path, "wb") as f:
                    np.savez(f, **case)  # pickles an object array: the reader must refuse it
            demos = read(lambda: load_demos(path), path.name, d)
            demos = read(lambda: load_for_run(cfg.replace(demos=str(path)), (4,), np.float32), path.name, d)
            if not isinstance(demos, Exception):
                list(training_transitions(demos, cfg))

    fuzz("demos .npz", examples, damaged_bytes(demos_file) | demo_arrays(pristine), check)


# --------------------------------------------------------------------------- a real run: checkpoint, meta.json, eval.json


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny CartPole run trained in-process (TensorFlow once per module), with one complete checkpoint."""
    from agent.run.checkpoints import latest_checkpoint
    from agent.run.trainer import train

    path = tmp_path_factory.mktemp("run")
    cfg = resolve_config(env_id="CartPole-v1").replace(total_steps=300, learning_starts=100, eval_every=0, checkpoint_every=300,
                                                         replay_capacity=500, final_eval_episodes=1, eval_episodes=1, jit_compile=False)
    train(cfg, path, progress=False)
    return {"dir": path, "cfg": cfg, "ckpt": latest_checkpoint(path / "checkpoints")}


def reseal(ckpt: Path) -> None:
    """Rewrite the manifest for the files as they are now, as a writer would have sealed them (so the parts read them)."""
    from agent.run.checkpoints import MANIFEST, sha256_file

    manifest = json.loads((ckpt / MANIFEST).read_text())
    manifest["files"] = {p.relative_to(ckpt).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                         for p in sorted(ckpt.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (ckpt / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("examples", TIERS)
def test_checkpoint_manifest(examples, tmp_path, run):
    from agent.run.checkpoints import MANIFEST, verify

    ckpt = run["ckpt"]
    manifest = json.loads((ckpt / MANIFEST).read_text())
    files = sorted(manifest["files"])

    def check(case):
        name, data = case
        with case_dir(tmp_path) as d:
            copy_ = d / "checkpoints" / ckpt.name
            shutil.copytree(ckpt, copy_)
            if data is None:
                (copy_ / name).unlink()
            else:
                (copy_ / name).write_bytes(data)
            read(lambda: verify(copy_), ckpt.name, d)

    damaged_manifest = st.tuples(st.just(MANIFEST), json_files(manifest))
    damaged_part = st.sampled_from(files).flatmap(lambda n: st.tuples(st.just(n), damaged_bytes((ckpt / n).read_bytes()) | st.none()))
    fuzz("checkpoint manifest", examples, damaged_manifest | damaged_part, check)


@st.composite
def state_dir_damage(draw, part: Path):
    """One file of a state directory (state.json or an array) damaged: bytes, retyped JSON, another array, other values, pickled."""
    state = json.loads((part / "state.json").read_text())
    arrays = sorted(p.name for p in part.glob("*.npy"))
    target = draw(st.just("state.json") | st.sampled_from(arrays or ["state.json"]))  # half the cases in state.json, the rest spread over the arrays
    if target == "state.json":
        return target, draw(json_files(state))
    old = np.load(part / target, allow_pickle=False)
    kind = draw(st.sampled_from(["bytes", "retype", "values", "objects"]))
    if kind == "bytes":
        return target, draw(damaged_bytes((part / target).read_bytes()))
    if kind == "retype":
        new = draw(hnp.arrays(DEMO_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
    elif kind == "values":
        new = draw(hnp.arrays(old.dtype, old.shape))
    else:
        new = np.array([None, {"a": 1}], dtype=object)
    buf = io.BytesIO()
    np.save(buf, new, allow_pickle=True)
    return target, buf.getvalue()


@pytest.fixture(scope="module")
def live_parts(run):
    """The live components a resume of `run` would load its checkpoint into (agent/run/run_state.checkpoint_parts)."""
    from agent.run.checkpoints import CheckpointStore
    from agent.run.loop import build_agent, make_replay
    from agent.run.run_state import LoopState, checkpoint_parts
    from envs import make_env, obs_signature

    cfg = run["cfg"]
    env = make_env(cfg.env_id, seed=cfg.seed, mode="train", **config_lib.env_options(cfg))
    agent = build_agent(cfg, env)
    shape, dtype, _ = obs_signature(env)
    parts = checkpoint_parts(cfg, agent, make_replay(cfg, shape, dtype), env, LoopState(obs=np.zeros(shape, dtype)))
    with global_rngs_kept():
        assert CheckpointStore(run["ckpt"].parent).load(run["ckpt"], parts) == list(parts)  # the undamaged checkpoint loads
    yield parts
    env.close()


@contextlib.contextmanager
def global_rngs_kept():
    saved = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


@pytest.mark.parametrize("examples", TIERS)
def test_checkpoint_state_files(examples, tmp_path, run, live_parts):
    """Damaged state files sealed by a manifest that matches them: every part (run, agent, loop, rngs, replay, env) checks its own."""
    from agent.run.checkpoints import CheckpointStore

    ckpt = run["ckpt"]
    parts = [p.name for p in sorted(ckpt.iterdir()) if (p / "state.json").is_file()]

    def check(case):
        part, (name, data) = case
        with case_dir(tmp_path) as d, global_rngs_kept():
            copy_ = d / "checkpoints" / ckpt.name
            shutil.copytree(ckpt, copy_)
            (copy_ / part / name).write_bytes(data)
            reseal(copy_)
            store = CheckpointStore(d / "checkpoints")
            read(lambda: store.load(copy_, live_parts), ckpt.name, d)

    strategy = st.sampled_from(parts).flatmap(lambda p: st.tuples(st.just(p), state_dir_damage(ckpt / p)))
    fuzz("checkpoint state files", examples, strategy, check)


# --------------------------------------------------------------------------- the replay state (uniform, frame and sequence memories)


@pytest.fixture(scope="module")
def frame_replay_state(tmp_path_factory):
    """A prioritized frame replay memory's saved state (6x6 frames, stack 4), a few episodes in a ring that wrapped."""
    from agent.core.state_files import write_state
    from replay import FrameReplayBuffer

    def make():
        return FrameReplayBuffer(24, frame_shape=(6, 6), stack=4, seed=0, prioritized=True)

    memory, rng = make(), np.random.default_rng(0)
    for episode in range(4):
        obs = np.repeat(rng.integers(0, 255, (6, 6, 1), dtype=np.uint8), 4, axis=2)
        for t in range(7):
            next_obs = np.concatenate([obs[..., 1:], rng.integers(0, 255, (6, 6, 1), dtype=np.uint8)], axis=2)
            memory.add(obs, t % 3, 1.0, next_obs, terminated=t == 6)
            obs = next_obs
    memory.update_priorities(np.flatnonzero(memory._sampleable()), rng.random(int(memory._sampleable().sum())))
    path = tmp_path_factory.mktemp("frames") / "replay"
    write_state(path, memory.state_dict())
    return path, make


@pytest.fixture(scope="module")
def sequence_replay_state(tmp_path_factory):
    """A prioritized sequence replay's saved state (the recurrent network's), a ring that wrapped and an open episode."""
    from agent.core.state_files import write_state
    from replay import SequenceReplay

    def make():
        return SequenceReplay(30, (2,), np.float32, (2, 3), sequence_length=4, burn_in=1, seed=0, prioritized=True)

    memory, rng = make(), np.random.default_rng(0)
    for episode in range(5):
        for t in range(7):
            memory.add(rng.normal(size=2), t % 2, 1.0, rng.normal(size=2), episode < 4 and t == 6, carry=rng.normal(size=(2, 3)))
    memory.update_priorities(np.flatnonzero(memory.sampleable), rng.random(len(memory)))
    path = tmp_path_factory.mktemp("sequences") / "replay"
    write_state(path, memory.state_dict())
    return path, make


@pytest.mark.parametrize("kind", ["uniform", "frames", "sequences"])
@pytest.mark.parametrize("examples", TIERS)
def test_replay_state(examples, kind, tmp_path, run, frame_replay_state, sequence_replay_state):
    from agent.run.loop import make_replay
    from agent.run.run_state import StateDictPart

    if kind == "uniform":
        saved, cfg = run["ckpt"] / "replay", run["cfg"]
        memory = make_replay(cfg, (4,), np.float32)
    else:
        saved, make = frame_replay_state if kind == "frames" else sequence_replay_state
        memory = make()
    part = StateDictPart(memory, "replay memory", optional=tuple(getattr(memory, "REBUILT_IF_MISSING", ())))

    def check(case):
        name, data = case
        with case_dir(tmp_path) as d:
            copy_ = d / "replay"
            shutil.copytree(saved, copy_)
            (copy_ / name).write_bytes(data)
            read(lambda: part.load_state(copy_, "checkpoint step-000000300"), "step-000000300", d)

    fuzz(f"replay state ({kind})", examples, state_dir_damage(saved), check)


@pytest.mark.parametrize("examples", TIERS)
def test_meta_json(examples, tmp_path, run):
    from agent.run.run_dir import RunDirectory

    meta = json.loads((run["dir"] / "meta.json").read_text())

    def check(data: bytes):
        with case_dir(tmp_path) as d:
            (d / "meta.json").write_bytes(data)
            meta = read(lambda: RunDirectory(d).load_meta(), "meta.json", d)
            assert (RunDirectory(d).meta_or_none() is None) == isinstance(meta, Exception)  # what train.py's resume check reads

    fuzz("meta.json", examples, json_files(meta), check)


@pytest.mark.parametrize("examples", TIERS)
def test_eval_json(examples, tmp_path, run):
    """eval.json: the readers answer None for anything unreadable, never raise; the sweep's finals are numbers."""
    from agent.plot.curves import _final_eval
    from agent.run.run_dir import RunDirectory
    from agent.sweep.state import final_eval

    final = json.loads((run["dir"] / "eval.json").read_text())

    def check(data: bytes):
        with case_dir(tmp_path) as d:
            (d / "eval.json").write_bytes(data)
            before = tree(d)
            got = RunDirectory(d).final_eval()
            assert got is None or isinstance(got, dict)
            assert RunDirectory(d).final_eval_at(final["env_step"]) is None or got is not None
            sweep = final_eval(d, final["env_step"])
            assert sweep is None or math.isfinite(float(sweep["mean"]))
            curve = _final_eval(d)
            assert curve is None or all(isinstance(v, float) for v in curve)
            assert tree(d) == before

    fuzz("eval.json", examples, json_files(final), check)


# --------------------------------------------------------------------------- exported model metadata

EXPORT_META = {
    "format_version": 1, "format": "tflite", "model": "model.tflite", "env_id": "CartPole-v1", "pixels": False, "pixel_view": "full",
    "action_repeat": 1, "input": {"name": "obs", "shape": [None, 4], "dtype": "float32"}, "output": {"shape": [None, 2], "dtype": "float32"},
    "num_actions": 2, "action_meanings": ["LEFT", "RIGHT"], "preprocessing": "none", "greedy_action": "the argmax of the output",
    "play_epsilon": 0.0, "source": {"run_dir": "/runs/cartpole", "model": "model.keras", "env_step": 50000},
}


@pytest.mark.parametrize("examples", TIERS)
def test_export_metadata(examples, tmp_path):
    """`<model>.json` beside an exported model: read_metadata, then the check play.py makes against the env it names."""
    from agent.export.runtimes import check_against_env, read_metadata

    env = gym.make("CartPole-v1")

    def check(data: bytes):
        with case_dir(tmp_path) as d:
            model = d / "model.tflite"
            model.write_bytes(b"a dummy model")
            (d / "model.tflite.json").write_bytes(data)
            meta = read(lambda: read_metadata(model), "model.tflite", d)
            if not isinstance(meta, Exception):
                read(lambda: check_against_env(meta, env, model), "model.tflite", d)

    fuzz("export metadata", examples, json_files(EXPORT_META), check)
    env.close()


# --------------------------------------------------------------------------- sweep files

SWEEP_FILE = {"env": ["CartPole-v1"], "seeds": 2, "first_seed": 0, "steps": 2000, "search": False,
              "set": {"eval_every": 1000}, "grid": {"learning_rate": [1e-3, 3e-4], "hidden_sizes": [[64, 64], [128, 128]]}}
SWEEP_KEYS = st.sampled_from(["env", "preset", "seeds", "first_seed", "steps", "search", "budget", "set", "grid"])


@pytest.mark.parametrize("examples", TIERS)
def test_sweep_file(examples, tmp_path):
    """A sweep file (`--config`): read, then turned into the sweep's spec and its trials, as `python -m agent.sweep` does."""
    from agent.sweep.cli import build_spec, load_sweep_file
    from agent.sweep.plan import plan

    def check(data: bytes):
        with case_dir(tmp_path) as d:
            path = d / "sweep.toml"
            path.write_bytes(data)
            read(lambda: load_sweep_file(path), path.name, d)
            spec = read(lambda: build_spec((), None, path, (), (), None, None, None, False, None), path.name, d)
            if not isinstance(spec, Exception):
                read(lambda: plan(spec), "", d)  # [set]/[grid] values are checked as --set/--grid values are

    fuzz("sweep file", examples, toml_files(SWEEP_FILE, keys=SWEEP_KEYS | st.text(max_size=8)), check)


@pytest.fixture(scope="module")
def sweep_state(tmp_path_factory):
    """DIR/sweep.json as a sweep writes it, with the spec and trials it was written for."""
    from agent.sweep.plan import SweepSpec, plan
    from agent.sweep.state import prepare_out

    spec = SweepSpec(envs=("CartPole-v1",), seeds=(0, 1), steps=1000, grid={"learning_rate": ("1e-3", "3e-4")})
    trials = plan(spec)
    out, _ = prepare_out(tmp_path_factory.mktemp("sweep") / "out", spec, trials)
    return json.loads((out / "sweep.json").read_text()), spec, trials


@pytest.mark.parametrize("examples", TIERS)
def test_sweep_state_file(examples, tmp_path, sweep_state):
    from agent.sweep.state import prepare_out

    saved, spec, trials = sweep_state

    def check(data: bytes):
        with case_dir(tmp_path) as d:
            (d / "sweep.json").write_bytes(data)
            read(lambda: prepare_out(d, spec, trials), "sweep.json", d)

    fuzz("sweep state file", examples, json_files(saved), check)
