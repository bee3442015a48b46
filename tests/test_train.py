"""train.py end to end: run directories, determinism, learning, and every bad input."""

import json
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

import train as train_cli
from agent.run.run_dir import RunDirectory
from agent.core.presets import resolve_config
from agent.run.loop import TrainingInterrupted, build_agent
from agent.run.trainer import Trainer, train
from envs import make_env

TINY = dict(total_steps=1_500, learning_starts=500, train_freq=50, gradient_steps=50, eval_every=0,
            eval_episodes=2, final_eval_episodes=0, checkpoint_every=500, log_every=500)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    cfg = resolve_config(env_id="CartPole-v1").replace(**TINY)
    result = train(cfg, path, progress=False)
    return cfg, path, result


def cli(*args):
    result = CliRunner().invoke(train_cli.main, [*args, "--no-progress"])
    return result.exit_code, result.output


def test_run_directory_holds_everything(tiny_run):
    cfg, path, result = tiny_run
    for name in ("config.toml", "meta.json", "model.keras", "progress.csv", "eval.json", "checkpoints"):
        assert (path / name).exists(), name
    assert list((path / "tb").glob("events.out.tfevents.*"))
    assert RunDirectory(path).load_config() == cfg
    ev = json.loads((path / "eval.json").read_text())
    assert ev["env_id"] == "CartPole-v1" and len(ev["returns"]) == 2 and ev["env_step"] == 1_500
    rows = (path / "progress.csv").read_text().splitlines()
    assert rows[0].startswith("env_step,") and len(rows) == 1 + 3
    assert result.updates == 21 * 50  # learner calls at env steps 500, 550, ..., 1500 (21 of them)


def test_saved_model_gives_identical_actions(tiny_run):
    cfg, path, _ = tiny_run
    model = RunDirectory(path).load_model()
    env = make_env(cfg.env_id, seed=0)
    agent = build_agent(cfg, env)
    agent.set_online_weights(model.get_weights())
    obs = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    np.testing.assert_array_equal(model(obs).numpy().argmax(1), agent.act(obs, 0.0))


def test_checkpoint_restores_the_networks(tiny_run):
    import tensorflow as tf

    from agent.run.checkpoints import latest_checkpoint, list_checkpoints

    cfg, path, _ = tiny_run
    env = make_env(cfg.env_id, seed=0)
    fresh = build_agent(cfg.replace(seed=99), env)
    ckpt = tf.train.Checkpoint(online=fresh.online, target=fresh.target, optimizer=fresh.optimizer)
    latest = latest_checkpoint(path / "checkpoints")
    ckpt.read(str(latest / "agent" / "networks")).assert_existing_objects_matched()
    saved = RunDirectory(path).load_model()
    for a, b in zip(fresh.online.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert latest.name == "step-000001500" and json.loads((latest / "loop" / "state.json").read_text())["values"]["step"] == 1_500
    assert [step for step, _ in list_checkpoints(path / "checkpoints")] == [500, 1_000, 1_500]  # keep=3


def test_same_seed_same_returns(tmp_path):
    cfg = resolve_config(env_id="CartPole-v1").replace(**{**TINY, "eval_every": 500, "checkpoint_every": 0})
    a = train(cfg, tmp_path / "a", progress=False) if (tmp_path / "a").mkdir() is None else None
    b = train(cfg, tmp_path / "b", progress=False) if (tmp_path / "b").mkdir() is None else None
    assert [e["mean"] for e in a.evaluations] == [e["mean"] for e in b.evaluations]
    assert a.final_eval["returns"] == b.final_eval["returns"]
    for x, y in zip(RunDirectory(tmp_path / "a").load_model().get_weights(), RunDirectory(tmp_path / "b").load_model().get_weights()):
        np.testing.assert_array_equal(x, y)
    assert (tmp_path / "a" / "progress.csv").read_text().split("\n")[1].split(",")[7] == (tmp_path / "b" / "progress.csv").read_text().split("\n")[1].split(",")[7]


@pytest.mark.slow
def test_short_cartpole_run_learns(tmp_path):
    """The default preset, 20,000 env steps: the greedy policy must balance well beyond random (~20).
    (Slow tier: the fast tier's API and resume tests train too, but do not judge learning.)"""
    cfg = resolve_config(env_id="CartPole-v1").replace(total_steps=20_000, eval_every=0, checkpoint_every=0)
    result = train(cfg, tmp_path, progress=False)
    assert result.final_eval["mean"] >= 150, result.final_eval


def test_cli_trains_and_refuses_to_overwrite(tmp_path):
    run = tmp_path / "run"
    code, out = cli("--env", "CartPole-v1", "--steps", "600", "--run-dir", str(run), "--set", "learning_starts=200",
                    "--set", "train_freq=100", "--set", "gradient_steps=10", "--eval-episodes", "1")
    assert code == 0, out
    assert "run saved to" in out and (run / "model.keras").exists()
    before = (run / "model.keras").read_bytes()
    code, out = cli("--steps", "600", "--run-dir", str(run))
    assert code == 2 and "already holds a run" in out and "--force" in out
    assert (run / "model.keras").read_bytes() == before
    code, out = cli("--steps", "300", "--run-dir", str(run), "--force", "--eval-episodes", "1")
    assert code == 0, out


def test_a_time_budget_ends_the_run_like_its_last_step_and_a_resume_needs_more_minutes(tmp_path):
    run = tmp_path / "run"
    args = ("--set", "learning_starts=200", "--set", "train_freq=100", "--set", "gradient_steps=10", "--eval-episodes", "1",
            "--set", "eval_every=0", "--set", "checkpoint_every=0")
    code, out = cli("--steps", "1000000", "--minutes", "0.02", "--run-dir", str(run), *args)  # 1.2 s of training
    assert code == 0, out
    assert "or 0.02 minutes of training" in out and "final eval" in out
    done = json.loads((run / "eval.json").read_text())
    assert 0 < done["env_step"] < 1_000_000 and done["train_seconds"] >= 1.2
    import csv
    with (run / "progress.csv").open() as f:
        evaluated = [row for row in csv.DictReader(f) if row["eval_return_mean"]]
    assert int(evaluated[-1]["env_step"]) == done["env_step"]  # the curve ends with the evaluation the run ended with
    assert RunDirectory(run).load_config().train_minutes == 0.02
    before = (run / "eval.json").read_bytes()
    code, out = cli("--resume", str(run))
    assert code == 2 and "spent its budget of 0.02 minutes" in out and "--minutes" in out, out
    assert (run / "eval.json").read_bytes() == before  # nothing changed
    more = done["train_seconds"] / 60 + 0.02  # the first learner call (tracing) may overrun a tiny budget
    code, out = cli("--resume", str(run), "--minutes", f"{more:.4f}")
    assert code == 0, out
    again = json.loads((run / "eval.json").read_text())
    assert again["env_step"] > done["env_step"] and again["train_seconds"] >= 60 * float(f"{more:.4f}")


@pytest.mark.parametrize("final_eval_episodes, fires_in_episode, message", [
    (0, 1, "Ctrl-C at env step 1,500: checkpoint step-000001500 saved"),  # the evaluation at the last step is the final one
    (3, 3, "Ctrl-C during the final evaluation at env step 1,500: checkpoint step-000001500 is saved"),  # the hook's 2, then 3 more
])
def test_ctrl_c_in_an_evaluation_ends_it_at_once_and_a_resume_evaluates(tmp_path, final_eval_episodes, fires_in_episode, message):
    import gymnasium as gym

    class CtrlCInAnEpisode(gym.Wrapper):
        """Sends SIGINT on the 2nd step of its `fires_in_episode`-th episode, and counts the steps after it."""

        resets, steps_after = 0, 0

        def reset(self, **kwargs):
            type(self).resets += 1
            self.t = 0
            return self.env.reset(**kwargs)

        def step(self, action):
            self.t += 1
            if type(self).resets == fires_in_episode and self.t == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the handler of Trainer.train takes it
            elif type(self).resets > fires_in_episode or (type(self).resets == fires_in_episode and self.t > 2):
                type(self).steps_after += 1
            return self.env.step(action)

    cfg = resolve_config(env_id="CartPole-v1").replace(**{**TINY, "final_eval_episodes": final_eval_episodes})  # eval_every=0
    with Trainer(cfg, tmp_path, eval_env=CtrlCInAnEpisode(make_env("CartPole-v1", seed=1, mode="eval"))) as trainer:
        with pytest.raises(TrainingInterrupted, match=message):
            trainer.train()
    assert CtrlCInAnEpisode.steps_after == 0  # not one more step
    assert not (tmp_path / "eval.json").exists()
    result = train(cfg, tmp_path, progress=False, resume=True)
    assert result.finished and result.env_steps == 1_500 and len(result.final_eval["returns"]) == (final_eval_episodes or 2)
    assert json.loads((tmp_path / "eval.json").read_text())["env_step"] == 1_500


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "NoSuchEnv-v0"], "unknown env id 'NoSuchEnv-v0'"),
        (["--env", "CartPol-v1"], "did you mean CartPole-v1"),
        (["--env", "Pendulum-v1"], "DQN needs discrete actions"),
        (["--env", "Nonsense"], "unknown env 'Nonsense'"),
        (["--set", "no_such_field=1"], "unknown config field 'no_such_field'"),
        (["--set", "batch_size=big"], "expects an integer"),
        (["--set", "learning_rate=-0.001"], "learning_rate must be > 0"),
        (["--set", "batch_size=512", "--set", "replay_capacity=100"], "larger than replay_capacity"),
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--minutes", "0"], "train_minutes must be > 0 minutes"),
        (["--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    run = tmp_path / "run"
    code, out = cli(*args, "--run-dir", str(run))
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out
    assert not run.exists()  # nothing was created


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    code, out = cli("--steps", "2000", "--run-dir", str(run), "--set", "loss=mse", "--set", "terminal_reward=3e38",
                    "--set", "learning_starts=300", "--set", "checkpoint_every=100", "--set", "train_freq=1",
                    "--set", "gradient_steps=1", "--eval-episodes", "1")
    assert code == 1
    line = out.strip().splitlines()[-1]
    assert line.startswith("error: training stopped at env step 300: loss became inf")
    assert "step-000000200" in line and str(run) in line  # the update at step 300 failed; step 200 was the last save
    model = RunDirectory(run).load_model()
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert json.loads((run / "meta.json").read_text())["env_step"] == 200


def test_best_model_is_the_best_evaluation(tmp_path):
    cfg = resolve_config(env_id="CartPole-v1").replace(**{**TINY, "total_steps": 3_000, "eval_every": 500, "checkpoint_every": 0})
    result = train(cfg, tmp_path, progress=False)
    best = max(result.evaluations, key=lambda e: e["mean"])
    assert json.loads((tmp_path / "eval.json").read_text())["best"] == best
    model = RunDirectory(tmp_path).load_model("best")
    env = make_env(cfg.env_id, seed=0)
    agent = build_agent(cfg, env)
    agent.set_online_weights(model.get_weights())
    from agent.rollout.evaluation import evaluate

    eval_env = make_env(cfg.env_id, seed=cfg.seed + 10_000, mode="eval")
    assert evaluate(agent, eval_env, cfg.eval_episodes, seed=cfg.seed + 20_000)["mean"] == best["mean"]


def tree_bytes(root) -> dict:
    """Every file under `root` with its bytes: a run compared byte for byte."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_force_keeps_the_old_run_when_the_new_one_is_refused(tmp_path, tiny_run):
    """--force replaces a run only once the new one has a complete checkpoint; every refusal leaves it as it was."""
    import shutil

    import keras

    _, finished, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = tree_bytes(run)
    no_torso = tmp_path / "no_torso.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="head")]).save(no_torso)
    refusals = [
        (["--init-from", str(no_torso)], "--init-from"),  # checked inside training, after the directory was prepared
        (["--set", "replay_capacity=100000000000"], "replay"),  # does not fit in memory
        (["--env", "NoSuchEnv-v0"], "unknown env id"),
        (["--set", "learning_rate=-1"], "learning_rate must be > 0"),
    ]
    for args, message in refusals:
        code, out = cli("--env", "CartPole-v1", *args, "--steps", "600", "--run-dir", str(run), "--force")
        assert code == 2 and message in out, out
        assert tree_bytes(run) == before, f"{args} changed the old run"
        assert not list(tmp_path.glob(".run.replaced-*")), "the old run was left aside"
    code, out = cli("--env", "CartPole-v1", "--steps", "300", "--set", "learning_starts=100", "--eval-episodes", "1",
                    "--run-dir", str(run), "--force")
    assert code == 0, out
    assert RunDirectory(run).load_meta()["env_step"] == 300 and not list(tmp_path.glob(".run.replaced-*"))


def test_one_process_per_run_directory(tmp_path, tiny_run):
    """A second process is refused at once, naming the first one's pid; a lock left by a killed process blocks nothing."""
    import shutil
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    _, finished, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)

    def resume(steps: int, **kw):
        return [sys.executable, str(root / "train.py"), "--resume", str(run), "--steps", str(steps), "--checkpoint-every", "1000000", "--no-progress"]

    first = subprocess.Popen(resume(10_000_000), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while (run / ".lock").read_text().strip() != str(first.pid):
            assert first.poll() is None, "the first process ended before it took the run"
            assert time.monotonic() < deadline, "the first process never took the run"
            time.sleep(0.2)
        second = subprocess.run(resume(10_000_000), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"pid {first.pid}" in lines[0], second.stderr
        assert first.poll() is None, "the first process must go on untouched"
    finally:
        first.kill()
        first.wait()
    third = subprocess.run(resume(1_600), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert RunDirectory(run).load_meta()["env_step"] == 1_600


def test_a_resume_of_a_run_in_use_is_refused_before_tensorflow_loads(tmp_path, tiny_run):
    """The holder here is this test process (an flock on the run's .lock); the refused resume never imports TensorFlow."""
    import shutil

    from entry_points import run_entry_point

    run = tmp_path / "run"
    shutil.copytree(tiny_run[1], run)
    before = sorted(p.name for p in run.iterdir())
    with RunDirectory(run).locked():
        proc = run_entry_point("train", "--resume", run, "--steps", 3000)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {str(run)!r} is in use by another process (pid {os.getpid()}); "
                                                "wait for it to finish or stop it, then try again"], proc.stderr
    assert "heavy modules loaded: []" in proc.stdout
    assert sorted(p.name for p in run.iterdir()) == before


def test_record_every_saves_the_evaluation_episode_as_a_video(tmp_path):
    """`--record-every 500`: videos/step-000000500.mp4 and step-000001000.mp4, each one greedy episode from seed
    seed + 30,000; the last one shows the final network, so play.py replays the same episode from that seed."""
    import play
    from agent.rollout.recording import PANEL_WIDTH
    from videos import read_video

    run = tmp_path / "run"
    code, out = cli("--env", "CartPole-v1", "--steps", "1000", "--record-every", "500", "--set", "learning_starts=500", "--set", "train_freq=50",
                    "--set", "gradient_steps=50", "--eval-every", "0", "--eval-episodes", "1", "--set", "final_eval_episodes=0", "--run-dir", str(run))
    assert code == 0, out
    assert "record_every = 500" in (run / "config.toml").read_text()
    videos = sorted((run / "videos").iterdir())
    assert [v.name for v in videos] == ["step-000000500.mp4", "step-000001000.mp4"]
    for video in videos:
        frames = read_video(video)
        assert frames[0].shape == (400, 600 + PANEL_WIDTH, 3)
        assert 9 <= len(frames) <= 501  # a CartPole episode: 8 to 500 steps, and its first state
    replay = CliRunner().invoke(play.main, [str(run), "--headless", "--episodes", "1", "--seed", "30000"])
    assert replay.exit_code == 0, replay.output
    score = float(replay.output.split("episode 1:")[1].split()[0])
    assert len(read_video(videos[-1])) == score + 1


def test_n_step_returns_anneal_over_the_env_steps(tmp_path, monkeypatch):
    """Each learner call samples with the n the schedule gives at its env step (n_steps -> n_steps_end)."""
    from agent.run.learner import Learner

    seen: list[tuple[int, int]] = []
    call = Learner.call

    def spying_call(self, *args, **kwargs):
        seen.append((self.state.step, self.replay.n_steps))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "call", spying_call)
    cfg = resolve_config(env_id="CartPole-v1").replace(**TINY, n_steps=5, n_steps_end=1, n_steps_decay=1_000)
    train(cfg, tmp_path, progress=False)
    assert seen[0] == (500, 3) and seen[-1] == (1_500, 1)  # 5 - 4 * 500 / 1000 = 3 at the first call
    assert [n for _, n in seen] == [max(1, round(5 - 4 * step / 1_000)) for step, _ in seen]
