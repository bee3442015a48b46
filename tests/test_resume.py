"""Training that survives: exact resume, SIGKILL at any moment, Ctrl-C/SIGTERM, and hostile checkpoints."""

import csv
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import train as train_cli
from agent.core import state_files
from agent.run.checkpoints import MANIFEST as MANIFEST_NAME, CheckpointError, CheckpointStore, list_checkpoints, verify
from common.errors import UserError
from agent.core.presets import resolve_config
from agent.run.run_state import LoopState, StateDictPart, checkpoint_parts
from agent.run.loop import build_agent, make_replay
from agent.run.trainer import train
from envs import make_env, obs_signature
from envs import snapshot as env_snapshot
from replay import FrameReplayBuffer, ReplayBuffer

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(total_steps=2_000, learning_starts=500, train_freq=50, gradient_steps=50, eval_every=1_000,
            eval_episodes=2, final_eval_episodes=3, checkpoint_every=1_000, log_every=250, replay_capacity=5_000)
SAME_COLUMNS = ["env_step", "episodes", "updates", "epsilon", "train_return_mean", "loss", "q_mean",
                "eval_return_mean", "eval_return_std"]  # all but the clocks


def tiny_cfg(**changes):
    return resolve_config(env_id="CartPole-v1").replace(**{**TINY, **changes})


def progress_rows(run):
    with (run / "progress.csv").open() as f:
        return [[row[k] for k in SAME_COLUMNS] for row in csv.DictReader(f)]


def network_tensors(ckpt_dir):
    prefix = str(ckpt_dir / "agent" / "networks")
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(prefix)
            if "_CHECKPOINTABLE_OBJECT_GRAPH" not in name}


def snapshot(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    return run, train(tiny_cfg(), run, progress=False)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    run = tmp_path_factory.mktemp("resumed")
    half = train(tiny_cfg(), run, progress=False, pause_at=1_000)
    assert not half.finished and half.env_steps == 1_000 and not (run / "eval.json").exists()
    return run, train(tiny_cfg(), run, progress=False, resume=True)


# ---------------------------------------------------------------- exact resume


def test_resume_is_bit_exact(straight, resumed):
    (a, ra), (b, rb) = straight, resumed
    assert (ra.env_steps, ra.episodes, ra.updates) == (rb.env_steps, rb.episodes, rb.updates)
    assert ra.final_eval["returns"] == rb.final_eval["returns"]
    assert [e["mean"] for e in ra.evaluations] == [e["mean"] for e in rb.evaluations]
    assert progress_rows(a) == progress_rows(b) and len(progress_rows(a)) == 2_000 // 250
    # online, target and optimizer slots of the last checkpoint, and the replay memory it holds
    last_a, last_b = a / "checkpoints" / "step-000002000", b / "checkpoints" / "step-000002000"
    ta, tb = network_tensors(last_a), network_tensors(last_b)
    assert sorted(ta) == sorted(tb) and any("optimizer" in k for k in ta) and any("target" in k for k in ta)
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name], err_msg=name)
    for npy in sorted((last_a / "replay").glob("*.npy")):
        assert npy.read_bytes() == (last_b / "replay" / npy.name).read_bytes(), npy.name
    for file in ("agent/state.json", "agent/rng.npy", "rngs/state.json", "rngs/python_state.npy", "rngs/numpy_key.npy", "loop/obs.npy"):
        assert (last_a / file).read_bytes() == (last_b / file).read_bytes(), file  # update count, every RNG, the observation
    la, lb = (json.loads((d / "loop" / "state.json").read_text())["values"] for d in (last_a, last_b))
    for values in (la, lb):  # all but the clocks
        del values["wall_seconds"], values["eval_seconds"]
        for evaluation in values["evaluations"]:
            del evaluation["train_seconds"]
    assert la == lb
    ea, eb = (json.loads((d / "env" / "state.json").read_text())["values"]["snapshot"] for d in (last_a, last_b))
    assert ea["layers"][-1] == eb["layers"][-1]  # the live env (its wrappers above hold wall-clock episode times)


def test_resume_drops_logs_written_after_the_checkpoint(straight, tmp_path):
    """A killed run's rows past its last checkpoint (and a torn last line) go; the resumed rows match."""
    a, _ = straight
    run = tmp_path / "run"
    shutil.copytree(a, run)
    shutil.rmtree(run / "checkpoints" / "step-000002000")  # as if killed just before that checkpoint
    (run / "eval.json").unlink()
    (run / "checkpoints" / ".tmp-step-000002000-x").mkdir()  # a half-written checkpoint
    with (run / "progress.csv").open("a") as f:
        f.write("2250,99,9")  # torn row
    train(tiny_cfg(), run, progress=False, resume=True)
    assert progress_rows(run) == progress_rows(a)
    assert not list((run / "checkpoints").glob(".tmp-*"))
    steps = []  # TensorBoard: the events past step 1000 of the "killed" session were dropped, then rewritten once
    for path in (run / "tb").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            steps += [(event.step, v.tag) for v in event.summary.value if v.tag == "loss"]
    assert sorted(steps) == sorted(set(steps)) and max(steps)[0] == 2_000


def test_replay_can_be_left_out(tmp_path, capfd):
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_cfg(total_steps=600, checkpoint_every=300, eval_every=0, jit_compile=False)
    train(cfg, run, progress=False, save_replay=False, pause_at=300)
    assert not (run / "checkpoints" / "step-000000300" / "replay").exists()
    result = train(cfg, run, progress=False, resume=True)
    assert result.env_steps == 600
    assert "learning restarts from an empty buffer" in capfd.readouterr().err


# ---------------------------------------------------------------- replay memories on disk


def test_frame_replay_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    buf = FrameReplayBuffer(300, frame_shape=(84, 84), stack=4, seed=5)
    obs = rng.integers(0, 256, (84, 84, 4), dtype=np.uint8)
    for t in range(700):  # wraps the ring twice, with episode ends and truncations
        nxt = np.concatenate([obs[..., 1:], rng.integers(0, 256, (84, 84, 1), dtype=np.uint8)], axis=-1)
        end = t % 97 == 96
        buf.add(obs, int(rng.integers(4)), float(rng.normal()), nxt, end and t % 2 == 0, truncated=end and t % 2 == 1)
        obs = np.repeat(rng.integers(0, 256, (84, 84, 1), dtype=np.uint8), 4, axis=-1) if end else nxt
    StateDictPart(buf, "replay memory").save_state(tmp_path / "replay")
    back = FrameReplayBuffer(300, frame_shape=(84, 84), stack=4, seed=99)
    StateDictPart(back, "replay memory").load_state(tmp_path / "replay", "test")
    for name in ("frames", "actions", "rewards", "terminated", "back", "has_next", "last_next_obs"):
        np.testing.assert_array_equal(getattr(buf, name), getattr(back, name), err_msg=name)
    assert (buf.pos, buf.size, buf.num_links, buf.open, len(buf)) == (back.pos, back.size, back.num_links, back.open, len(back))
    for x, y in zip(buf.sample_many(2, 32), back.sample_many(2, 32)):  # the sampling RNG goes on identically
        np.testing.assert_array_equal(x, y)


def test_uniform_replay_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    buf = ReplayBuffer(50, (4,), np.float32, seed=3)
    for _ in range(80):
        buf.add(rng.normal(size=4), int(rng.integers(2)), float(rng.normal()), rng.normal(size=4), bool(rng.random() < 0.1))
    StateDictPart(buf, "replay memory").save_state(tmp_path / "replay")
    back = ReplayBuffer(50, (4,), np.float32, seed=7)
    StateDictPart(back, "replay memory").load_state(tmp_path / "replay", "test")
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        np.testing.assert_array_equal(getattr(buf, name), getattr(back, name), err_msg=name)
    assert (buf.pos, buf.size) == (back.pos, back.size)
    for x, y in zip(buf.sample(16), back.sample(16)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(CheckpointError, match="holds float32"):
        StateDictPart(ReplayBuffer(50, (5,), np.float32), "replay memory").load_state(tmp_path / "replay", "test")


def test_atari_env_state_round_trip():
    """The live ALE game (emulator, RNG, lives, frame stack) continues identically in a fresh env."""
    rng = np.random.default_rng(0)
    env = make_env("Breakout", seed=3, mode="train")
    obs, _ = env.reset(seed=3)
    for _ in range(60):
        obs, _, term, trunc, _ = env.step(int(rng.integers(4)))
        if term or trunc:
            obs, _ = env.reset()
    state, saved_obs = json.loads(json.dumps(env_snapshot.capture(env))), obs
    actions = rng.integers(4, size=120)

    def play(e, o):
        out = []
        for a in actions:
            o, r, term, trunc, _ = e.step(int(a))
            out.append((o, r, term))
            if term or trunc:
                o, _ = e.reset()
        return out

    expected = play(env, obs)
    other = make_env("Breakout", seed=77, mode="train")
    env_snapshot.restore(other, state)
    for (o1, r1, t1), (o2, r2, t2) in zip(expected, play(other, saved_obs)):
        np.testing.assert_array_equal(o1, o2)
        assert (r1, t1) == (r2, t2)
    with pytest.raises(env_snapshot.SnapshotError, match="wrappers"):
        env_snapshot.restore(make_env("Breakout", seed=0, mode="eval"), state)


# ---------------------------------------------------------------- hostile inputs


@pytest.fixture
def damaged_run(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight[0], run)
    return run, run / "checkpoints" / "step-000002000"


def resume_cli(run, *args):
    """Resume the 2,000-step run for 250 more env steps: enough to show it runs, quick enough to test many damages."""
    result = CliRunner().invoke(train_cli.main, ["--resume", str(run), "--steps", "2250", "--no-progress", *args])
    return result.exit_code, result.stderr


def rewrite_manifest(ckpt, **changes):
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in manifest["files"]:
        path = ckpt / name
        manifest["files"][name] = {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    manifest.update(changes)
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def truncate(ckpt, run):
    path = ckpt / "agent" / "networks.data-00000-of-00001"
    path.write_bytes(path.read_bytes()[:1000])


def flip_byte(ckpt, run):
    data = bytearray((ckpt / "loop" / "state.json").read_bytes())
    data[10] ^= 1
    (ckpt / "loop" / "state.json").write_bytes(bytes(data))


def missing_file(ckpt, run):
    (ckpt / "replay" / "rewards.npy").unlink()


def newer_format(ckpt, run):
    rewrite_manifest(ckpt, format_version=99)


def unknown_field(ckpt, run):
    with (run / "config.toml").open("a") as f:
        f.write("no_such_field = 1\n")


def wrong_type(ckpt, run):
    text = (run / "config.toml").read_text().replace("batch_size = 64", 'batch_size = "big"')
    (run / "config.toml").write_text(text)


def pickled_replay(ckpt, run):
    np.save(ckpt / "replay" / "actions.npy", np.array([{"evil": 1}] * 3, dtype=object), allow_pickle=True)
    rewrite_manifest(ckpt)  # the manifest vouches for it: only the loader stands in the way


def other_network(ckpt, run):
    state = json.loads((ckpt / "run" / "state.json").read_text())
    state["values"]["config"]["hidden_sizes"] = [32]
    (ckpt / "run" / "state.json").write_text(json.dumps(state))
    rewrite_manifest(ckpt)


def other_replay(ckpt, run):
    text = (run / "config.toml").read_text()
    assert "prioritized = false" in text
    (run / "config.toml").write_text(text.replace("prioritized = false", "prioritized = true"))


def other_returns(ckpt, run):
    text = (run / "config.toml").read_text()
    assert "n_steps = 3\n" in text
    (run / "config.toml").write_text(text.replace("n_steps = 3\n", "n_steps = 1\n"))  # other targets, other replay contents


def old_layout(ckpt, run):
    for path in (run / "checkpoints").iterdir():
        shutil.rmtree(path)
    (run / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    (run / "checkpoints" / "ckpt-1.index").write_bytes(b"")


@pytest.mark.parametrize("damage, message", [
    (truncate, "is damaged: agent/networks.data-00000-of-00001 has 1,000 bytes"),
    (flip_byte, "is damaged: loop/state.json does not match its sha256"),
    (missing_file, "is damaged: replay/rewards.npy is missing"),
    (newer_format, "written by a newer version (checkpoint format 99"),
    (unknown_field, "unknown config field 'no_such_field'"),
    (wrong_type, "config field 'batch_size' expects an integer"),
    (pickled_replay, "replay/actions.npy is not a plain numeric .npy array"),
    (other_network, "has hidden_sizes=(32,), this run's config.toml says (64, 64)"),
    (other_replay, "has prioritized=False, this run's config.toml says True; they must match to resume"),
    (other_returns, "has n_steps=3, this run's config.toml says 1; they must match to resume"),
    (old_layout, "holds checkpoints of an older version (ckpt-N"),
])
def test_hostile_checkpoint_is_refused_and_nothing_changes(damaged_run, damage, message):
    run, ckpt = damaged_run
    damage(ckpt, run)
    before = snapshot(run)
    code, err = resume_cli(run)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert snapshot(run) == before


def test_checkpoint_from_another_env_is_refused(damaged_run, tmp_path):
    run, _ = damaged_run
    other = tmp_path / "acrobot"
    other.mkdir()
    cfg = resolve_config(env_id="Acrobot-v1").replace(total_steps=200, learning_starts=1_000, eval_every=0, eval_episodes=1, checkpoint_every=200)
    train(cfg, other, progress=False, pause_at=200)
    shutil.copytree(other / "checkpoints" / "step-000000200", run / "checkpoints" / "step-000002200")
    before = snapshot(run)
    code, err = resume_cli(run)
    assert code == 2 and err.strip() == "error: checkpoint step-000002200 was made for Acrobot-v1, this run trains CartPole-v1; resume it in its own run directory", err
    assert snapshot(run) == before


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    cfg = tiny_cfg(total_steps=1_000, checkpoint_every=400, eval_every=0, jit_compile=False)
    real, calls = state_files.save_npy, []

    def failing(path, array):
        calls.append(path)
        if "step-000000800" in str(path) and len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, array)

    monkeypatch.setattr(state_files, "save_npy", failing)
    with pytest.raises(UserError, match=r"cannot write checkpoint step-000000800 .*No space left on device; the previous checkpoint \(step-000000400\) is kept"):
        train(cfg, run, progress=False)
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [400]
    assert not list((run / "checkpoints").glob(".tmp-*"))
    verify(run / "checkpoints" / "step-000000400")
    monkeypatch.setattr(state_files, "save_npy", real)
    assert train(cfg, run, progress=False, resume=True).env_steps == 1_000


def test_a_full_disk_at_the_first_checkpoint_advises_a_command_that_works(tmp_path, monkeypatch):
    """No complete checkpoint: `--resume` could not work, so the advice is to start again from the run's own config;
    after space is freed, that very command trains the run to its end in its own directory."""
    import shlex

    run = tmp_path / "run"
    real = state_files.save_npy

    def full_disk(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(state_files, "save_npy", full_disk)
    args = ["--env", "CartPole-v1", "--run-dir", str(run), "--steps", "600", "--checkpoint-every", "300", "--eval-every", "300",
            "--eval-episodes", "2", "--set", "learning_starts=200", "--set", "final_eval_episodes=2", "--no-progress"]
    result = CliRunner().invoke(train_cli.main, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "cannot write checkpoint step-000000300" in line and "No space left on device" in line and "--resume" not in line
    hint = line.split("free some space and start again with: ")[1]
    command = shlex.split(hint)
    assert command[:2] == ["python", "train.py"]
    monkeypatch.setattr(state_files, "save_npy", real)  # the space is freed
    result = CliRunner().invoke(train_cli.main, [*command[2:], "--no-progress"])
    assert result.exit_code == 0, result.output
    final = json.loads((run / "eval.json").read_text())
    assert final["env_step"] == 600 and [p.name for p in sorted((run / "checkpoints").glob("step-*"))] == ["step-000000300", "step-000000600"]
    assert not list(tmp_path.glob(".run.replaced-*"))  # the failed first attempt, kept aside until now, is gone


def test_a_run_killed_before_its_first_checkpoint_is_told_a_command_that_works(tmp_path):
    """Killed after writing its config and before any checkpoint: `--resume` is refused, and the command in the refusal
    trains the run from its first step in its own directory."""
    import shlex

    from agent.run.run_dir import RunDirectory

    run = RunDirectory.create(tmp_path / "run")
    run.save_config(tiny_cfg(total_steps=600, checkpoint_every=300, eval_every=300))
    run.progress_csv.write_text("env_step,episodes\n")
    result = CliRunner().invoke(train_cli.main, ["--resume", str(run), "--no-progress"])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "has no complete checkpoint to resume from" in line
    command = shlex.split(line.split("start again with: ")[1])
    assert command[:2] == ["python", "train.py"]
    result = CliRunner().invoke(train_cli.main, [*command[2:], "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((run.path / "eval.json").read_text())["env_step"] == 600 and run.has_checkpoint()


def test_a_resume_after_a_kill_mends_an_empty_log_and_drops_half_written_files(tmp_path):
    """A process killed after its first checkpoint can leave progress.csv empty (the header not yet on disk) and the
    temporaries of interrupted atomic writes: the resume writes the header first and deletes the temporaries."""
    from agent.run.trainer import train

    cfg = tiny_cfg(total_steps=600, checkpoint_every=300, eval_every=0, log_every=1_000)
    train(cfg, tmp_path, progress=False, pause_at=300)
    (tmp_path / "progress.csv").write_text("")
    stale = [tmp_path / ".model.abcd1234.tmp.keras", tmp_path / ".meta.x1y2.tmp.json"]
    for path in stale:
        path.write_bytes(b"half")
    train(cfg, tmp_path, progress=False, resume=True)
    rows = list(csv.DictReader((tmp_path / "progress.csv").open()))
    assert rows and rows[-1]["env_step"] == "600"
    assert not any(path.exists() for path in stale) and (tmp_path / ".lock").exists()


def test_resume_refuses_other_options_and_finished_runs(straight):
    run, _ = straight
    result = CliRunner().invoke(train_cli.main, ["--resume", str(run), "--seed", "3"])
    assert result.exit_code == 2 and "--seed cannot be combined with it" in result.stderr
    result = CliRunner().invoke(train_cli.main, ["--resume", str(run), "--seed", "0", "--eval-every", "0"])  # 0 is a value too
    assert result.exit_code == 2 and "--seed, --eval-every cannot be combined with it" in result.stderr
    result = CliRunner().invoke(train_cli.main, ["--resume", str(run), "--no-progress"])
    assert result.exit_code == 2 and "finished its 2,000 env steps; pass --steps" in result.stderr


# ---------------------------------------------------------------- kills and signals (subprocesses)

KILL_ARGS = ["--env", "CartPole-v1", "--steps", "3000", "--eval-every", "0", "--eval-episodes", "1", "--no-progress",
             "--set", "learning_starts=500", "--set", "train_freq=50", "--set", "gradient_steps=25", "--set", "checkpoint_every=200",
             "--set", "log_every=200", "--set", "replay_capacity=10000", "--set", "jit_compile=false", "--set", "final_eval_episodes=2"]


def launch(*args, delay=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if delay:
        env["DQN_CHECKPOINT_WRITE_DELAY_S"] = str(delay)
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc, timeout=120.0, poll=0.005):
    """Poll until `predicate()` holds; fail (never hang) if train.py exits first or after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(poll)
    proc.kill()
    raise AssertionError("timed out")


def stopped(proc) -> bool:
    with open(f"/proc/{proc.pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def freeze_when(predicate, proc, timeout=120.0):
    """SIGSTOP train.py at a moment `predicate()` holds, checked again once it is stopped: a SIGKILL then leaves on disk
    exactly what the test saw, however fast or slow the machine is. Fails (never hangs) after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        wait_for(predicate, proc, timeout=max(end - time.monotonic(), 0.0))
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: stopped(proc), proc, timeout=30)
        if predicate():
            return
        proc.send_signal(signal.SIGCONT)  # the moment passed before the stop took hold: wait for the next one


def writing(run, *present, absent=()):
    """A checkpoint write in progress whose temp directory holds `present` and not `absent` (file names or globs)."""
    def check():
        for tmp in (run / "checkpoints").glob(".tmp-step-*"):
            if all(list(tmp.glob(p)) for p in present) and not any(list(tmp.glob(a)) for a in absent):
                return True
        return False
    return check


def newest(run):
    found = list_checkpoints(run / "checkpoints")
    return found[-1][0] if found else 0


def check_run_dir(run):
    """Every checkpoint on disk verifies against its manifest; progress.csv env steps increase."""
    for _, path in list_checkpoints(run / "checkpoints"):
        verify(path)
    with (run / "progress.csv").open() as f:
        steps = [int(row["env_step"]) for row in csv.DictReader(f)]
    return steps


def test_sigkill_sigint_sigterm_then_finish(tmp_path):
    """SIGKILL between checkpoint writes and at two points inside one, each moment made exact by stopping the process
    first; then Ctrl-C and SIGTERM; every complete checkpoint verifies after each, and the run finishes."""
    run = tmp_path / "run"
    seen = []
    # 1. SIGKILL after the first checkpoint, between writes
    proc = launch(*KILL_ARGS, "--run-dir", str(run))
    freeze_when(lambda: newest(run) >= 200 and not list((run / "checkpoints").glob(".tmp-*")), proc)
    proc.kill()
    proc.wait()
    seen.append(newest(run))
    check_run_dir(run)
    # 2. and 3. SIGKILL inside a checkpoint write (the writer pauses between its parts): the networks written but not the
    # state, then everything but the manifest
    for present, absent in ((("agent/networks.index",), ("loop",)), (("agent/networks.index", "loop/state.json", "replay/state.json"), (MANIFEST_NAME,))):
        proc = launch("--resume", str(run), "--no-progress", delay=0.2)
        freeze_when(lambda: newest(run) > seen[-1] and writing(run, *present, absent=absent)(), proc)
        proc.kill()
        proc.wait()
        assert writing(run, *present, absent=absent)()  # killed mid-write ...
        seen.append(newest(run))
        check_run_dir(run)  # ... and every complete checkpoint still verifies
    # 4. Ctrl-C and SIGTERM: a checkpoint, one message saying how to resume, exit 128 + signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = launch("--resume", str(run), "--no-progress")
        wait_for(lambda: newest(run) > seen[-1], proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, err
        last = err.strip().splitlines()[-1]
        name = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
        assert last.startswith(f"{name} at env step") and last.endswith(f"continue with: python train.py --resume {run}"), err
        step = newest(run)
        assert f"checkpoint step-{step:09d} saved" in last and f"env step {step:,}:" in last
        assert not list((run / "checkpoints").glob(".tmp-*"))
        seen.append(step)
    # 5. finish
    proc = launch("--resume", str(run), "--no-progress")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert seen == sorted(seen) and len(set(seen)) == len(seen), seen
    steps = check_run_dir(run)
    assert steps == sorted(set(steps)) and steps[-1] == 3_000 and len(steps) == 3_000 // 200
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2_600, 2_800, 3_000]  # --keep 3
    assert not list((run / "checkpoints").glob(".tmp-*"))
    assert json.loads((run / "eval.json").read_text())["env_step"] == 3_000
    # the newest checkpoint loads into a fresh agent
    cfg = resolve_config(env_id="CartPole-v1").replace(total_steps=3_000, replay_capacity=10_000, jit_compile=False)
    env = make_env(cfg.env_id, seed=0)
    agent = build_agent(cfg, env)
    loop = LoopState(obs=np.zeros(*obs_signature(env)[:2]))
    store = CheckpointStore(run / "checkpoints")
    store.load(store.latest(), checkpoint_parts(cfg, agent, make_replay(cfg, *obs_signature(env)[:2]), env, loop))
    assert loop.step == 3_000 and agent.num_updates > 0


def test_manifest_records_library_versions_and_a_resume_on_others_warns(damaged_run):
    """Each manifest names the versions of TensorFlow, Keras, gymnasium, ale-py and numpy; a resume under
    other versions still runs, with one warning line naming the difference (old manifests have none: no warning)."""
    from agent.run.checkpoints import library_versions

    run, ckpt = damaged_run
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["versions"] == library_versions()
    assert set(manifest["versions"]) == {"tensorflow", "keras", "gymnasium", "ale-py", "numpy"}
    assert manifest["versions"]["numpy"] == np.__version__
    rewrite_manifest(ckpt, versions={**manifest["versions"], "tensorflow": "2.0.0"})
    code, err = resume_cli(run)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: checkpoint step-000002000 was written with other library versions (tensorflow 2.0.0 -> {tf.__version__}); "
                        "the run resumes, but not necessarily bit for bit as it would have gone on"]


def test_a_manifest_without_versions_resumes_without_a_warning(damaged_run):
    run, ckpt = damaged_run
    manifest = json.loads((ckpt / "manifest.json").read_text())
    del manifest["versions"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    code, err = resume_cli(run)
    assert code == 0 and "warning:" not in err, err
