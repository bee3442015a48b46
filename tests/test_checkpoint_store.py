"""The checkpoint store knows nothing of what it holds; parts save themselves; old formats are refused in one line;
the training loop's hooks can stop it and everything it opened is closed on every path."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import train as train_cli
import agent.run.loop
from agent.run import trainer as training
from agent.run.checkpoints import CheckpointError, CheckpointStore, list_checkpoints, verify
from agent.core.presets import resolve_config
from agent.core.state_files import read_state, write_state

DATA = Path(__file__).resolve().parent / "data"


class Counter:
    """A toy component with a state dict: an array and a number."""

    def __init__(self, n=0):
        self.values = np.arange(5, dtype=np.int64) * n
        self.n = n

    def state_dict(self):
        return {"values": self.values, "n": self.n}

    def load_state_dict(self, state):
        self.values[...] = state["values"]
        self.n = int(state["n"])


class CounterPart:
    def __init__(self, counter):
        self.counter = counter

    def save_state(self, directory):
        write_state(directory, self.counter.state_dict())

    def load_state(self, directory, where):
        self.counter.load_state_dict(read_state(directory, where, like=self.counter.state_dict()))


class Notes:
    """A part with its own file format (plain text), to show the store does not care what is inside."""

    def __init__(self, text=""):
        self.text = text

    def save_state(self, directory):
        (directory / "notes.txt").write_text(self.text)

    def load_state(self, directory, where):
        self.text = (directory / "notes.txt").read_text()


def snapshot(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_store_seals_any_parts_and_gives_them_back(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    for step in (10, 20, 30):
        store.save(step, {"counter": CounterPart(Counter(step)), "notes": Notes(f"at {step}")})
    assert [s for s, _ in list_checkpoints(store.root)] == [20, 30]  # keep=2
    manifest = verify(store.latest())
    assert manifest["format_version"] == 2 and manifest["step"] == 30 and manifest["parts"] == ["counter", "notes"]
    assert set(manifest["files"]) == {"counter/state.json", "counter/values.npy", "notes/notes.txt"}
    counter, notes = Counter(), Notes()
    loaded = CheckpointStore(store.root).load(store.latest(), {"counter": CounterPart(counter), "notes": notes})
    assert loaded == ["counter", "notes"] and counter.n == 30 and counter.values.tolist() == [0, 30, 60, 90, 120] and notes.text == "at 30"


def test_the_store_refuses_missing_and_unasked_parts_but_allows_optional_ones(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, {"counter": CounterPart(Counter(1))})
    path = store.latest()
    with pytest.raises(CheckpointError, match=r"holds the parts \['counter'\], this run needs \['counter', 'notes'\]"):
        store.load(path, {"counter": CounterPart(Counter()), "notes": Notes()})
    assert store.load(path, {"counter": CounterPart(Counter()), "notes": Notes()}, optional=("notes",)) == ["counter"]
    with pytest.raises(CheckpointError, match="holds the parts"):
        store.load(path, {"notes": Notes()}, optional=("notes",))  # a part nobody asked for is not silently dropped


def test_a_part_checks_its_state_against_the_live_component(tmp_path):
    write_state(tmp_path / "counter", {"values": np.zeros(3, np.float32), "n": 1})
    with pytest.raises(CheckpointError, match=r"counter/values.npy holds float32\[3\], this run needs int64\[5\]"):
        CounterPart(Counter()).load_state(tmp_path / "counter", "checkpoint x")
    write_state(tmp_path / "counter", {"values": np.zeros(5, np.int64), "n": "one"})
    with pytest.raises(CheckpointError, match="counter field 'n' has a wrong type"):
        CounterPart(Counter()).load_state(tmp_path / "counter", "checkpoint x")
    write_state(tmp_path / "counter", {"values": np.zeros(5, np.int64), "n": 1})
    np.save(tmp_path / "counter" / "values.npy", np.array([{"evil": 1}] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError, match="counter/values.npy is not a plain numeric .npy array"):
        CounterPart(Counter()).load_state(tmp_path / "counter", "checkpoint x")


def test_a_checkpoint_of_the_format_before_the_parts_is_refused_in_one_line(tmp_path):
    """tests/data/v1-run was written by the code before this redesign (checkpoint format 1, one state.json for everything).
    A resume refuses it with one line that says what to do, changes nothing, and its model.keras still plays."""
    run = tmp_path / "v1-run"
    shutil.copytree(DATA / "v1-run", run)
    assert json.loads((run / "checkpoints" / "step-000000300" / "manifest.json").read_text())["format_version"] == 1
    before = snapshot(run)
    result = CliRunner().invoke(train_cli.main, ["--resume", str(run), "--steps", "400", "--no-progress"])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: checkpoint step-000000300 was written by an older version (checkpoint format 1, this one reads 2) and "
                     "cannot continue exactly; finish that run with the version that wrote it, or start a new one (its model.keras still plays)"]
    assert {k: v for k, v in snapshot(run).items() if k != ".lock"} == before
    from agent.run.run_dir import RunDirectory

    assert RunDirectory(run).load_model().output_shape == (None, 2)


def tiny_cfg(**changes):
    base = dict(total_steps=600, learning_starts=200, train_freq=50, gradient_steps=5, eval_every=300, eval_episodes=1,
                checkpoint_every=300, log_every=100, replay_capacity=1_000, jit_compile=False)
    return resolve_config(env_id="CartPole-v1").replace(**{**base, **changes})


def test_a_hook_can_stop_the_loop_and_the_run_ends_in_one_place(tmp_path, monkeypatch):
    """A hook returning a reason ends the loop after that whole env step; the run saves a checkpoint there and
    reports itself unfinished, as a pause does."""
    calls = []

    class StopAt250:
        def __call__(self, run):
            calls.append(run.state.step)
            return "pause" if run.state.step == 250 else None

    real_loop = training.run_loop
    monkeypatch.setattr(training, "run_loop", lambda run, hooks: real_loop(run, [*hooks, StopAt250()]))
    result = training.train(tiny_cfg(), tmp_path, progress=False)
    assert calls == list(range(1, 251)) and not result.finished and result.env_steps == 250
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [250]


def test_everything_opened_is_closed_when_a_hook_fails(tmp_path, monkeypatch):
    """An exception inside the loop still closes both envs, the logs and the signal handlers, and releases the run's lock."""
    import signal

    closed = []
    real_make_env = training.make_env

    def make_env(*args, **kwargs):
        env = real_make_env(*args, **kwargs)
        real_close = env.close
        env.close = lambda: (closed.append(kwargs["mode"]), real_close())
        return env

    def failing_evaluate(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(training, "make_env", make_env)
    monkeypatch.setattr(agent.run.loop, "evaluate", failing_evaluate)
    with pytest.raises(RuntimeError, match="evaluation broke"):
        training.train(tiny_cfg(), tmp_path, progress=False)
    assert sorted(closed) == ["eval", "train"]
    assert signal.getsignal(signal.SIGINT) is handler
    log = tmp_path / "progress.csv"
    rows = log.read_text().splitlines()
    assert rows[0].startswith("env_step,") and rows[-1].startswith("200,")  # flushed and closed up to the last row
    from agent.run.run_dir import RunDirectory

    with RunDirectory(tmp_path).locked():  # the lock is free again
        pass


def test_a_resume_rewrites_a_model_left_behind_its_checkpoint(tmp_path):
    """Killed (or out of disk) between the checkpoint and model.keras: the resume writes the model of the checkpoint it
    continues from before anything else, so eval.json, play.py and the export never judge an older network."""
    cfg = tiny_cfg(eval_every=0)
    training.train(cfg, tmp_path, progress=False, pause_at=300)
    (tmp_path / "model.keras").unlink()
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "checkpoint": None, "env_step": 0}))
    result = training.train(cfg.replace(total_steps=300), tmp_path, progress=False, resume=True)
    assert result.finished and json.loads((tmp_path / "meta.json").read_text())["checkpoint"] == "step-000000300"
    from agent.run.run_dir import RunDirectory

    saved = RunDirectory(tmp_path).load_model()
    with training.Trainer(cfg.replace(total_steps=300), tmp_path, resume=True, finished_ok=True) as trainer:
        for a, b in zip(saved.get_weights(), trainer.run.agent.online.get_weights()):
            np.testing.assert_array_equal(a, b)
