"""Every bench script runs end to end on a tiny budget and ends with a JSON line holding its keys (timings are never asserted, only what is known)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.plot import stats

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str, **environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}  # set by conftest's tfquiet.setup(); a user's shell has none
    env.update(environ)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# The two learning benches train CartPole in a subprocess (about a minute each on 2 cores): the slow tier
# (`make test-all`) runs them, so `make test` stays under CI's 15 minutes.
@pytest.mark.slow
def test_solve_reports_the_first_solve_and_the_end_of_each_run():
    out = bench("solve.py", "--seeds", "2", "--steps", "1200", "--set", "learning_starts=200")
    assert {"seeds", "solved", "median_steps", "median_seconds", "final_solved", "median_final", "min_final", "cpu", "total_steps",
            "iqm_steps", "iqm_steps_ci", "iqm_final", "iqm_final_ci"} <= out.keys()
    assert out["total_steps"] == 1200 and [r["seed"] for r in out["seeds"]] == [0, 1]
    for row in out["seeds"]:
        assert {"steps", "train_seconds", "final", "final_min", "held_after_solve", "evals_after_solve"} <= row.keys()
        assert 8 <= row["final_min"] <= row["final"] <= 500  # a CartPole episode lasts 8 to 500 steps
    finals = sorted(r["final"] for r in out["seeds"])
    assert out["min_final"] == finals[0] and out["final_solved"] == sum(f >= 475 for f in finals)
    # IQM and its 95% bootstrap interval over the seeds, from the same rows (an unsolved seed counts as the whole budget)
    steps = [r["steps"] if r["solved"] else 1200 for r in out["seeds"]]
    finals = [r["final"] for r in out["seeds"]]  # in seed order: the bootstrap's draws index the seeds
    assert out["iqm_final"] == pytest.approx(stats.iqm(finals), abs=0.005)
    assert out["iqm_final_ci"] == pytest.approx(list(stats.iqm_ci(finals)), abs=0.005)
    assert out["iqm_steps"] == pytest.approx(stats.iqm(steps), abs=0.05)
    assert out["iqm_steps_ci"] == pytest.approx(list(stats.iqm_ci(steps)), abs=0.05)
    assert out["iqm_final_ci"][0] <= out["iqm_final"] <= out["iqm_final_ci"][1]


@pytest.mark.slow
def test_cartpole_collapse_looks_at_the_run_in_slices():
    out = bench("cartpole_collapse.py", "--seed", "0", "--every", "600", "--set", "total_steps=1200", "--set", "learning_starts=200")
    assert [r["env_step"] for r in out["rows"]] == [600, 1200]
    for row in out["rows"]:
        assert sum(row["ends"].values()) == 10  # ten greedy episodes, each ended one way
        assert 0.0 <= row["terminal_share"] <= 1.0 and row["gap"] >= 0.0


@pytest.mark.parametrize("pixels", [False, True])
def test_cartpole_collapse_looks_at_a_finished_run_and_says_where_the_cart_was(tmp_path, pixels):
    """`--run`: a saved model's greedy episodes, how each ended and the cart's x then (read from the env: pixels hold no x)."""
    from agent.core.config import DQNConfig
    from agent.dqn.networks import build_q_network
    from agent.run.run_dir import RunDirectory

    cfg = DQNConfig(env_id="CartPole-v1", pixels=pixels, pixel_view="cart_track" if pixels else "full", network="auto")
    obs_shape, dtype = ((84, 84, 4), "uint8") if pixels else ((4,), "float32")
    RunDirectory(tmp_path).save_config(cfg)
    RunDirectory(tmp_path).save_model(build_q_network(obs_shape, dtype, 2))  # untrained: its games end within a few dozen steps
    out = bench("cartpole_collapse.py", "--run", str(tmp_path), "--episodes", "3")
    assert out["episodes"] == 3 and len(out["end_x"]) == 3 and sum(out["ends"].values()) == 3
    assert all(x != 0.0 for x in out["end_x"])  # read from the env's last state (every game starts near 0 and moves)
    assert out["ends"]["time"] == 0 and 0 < out["mean"] < 500


def test_cartpole_collapse_refuses_a_run_of_another_env_in_one_line(tmp_path):
    from agent.core.config import DQNConfig
    from agent.run.run_dir import RunDirectory

    RunDirectory(tmp_path).save_config(DQNConfig(env_id="Acrobot-v1"))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "cartpole_collapse.py"), "--run", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "trained Acrobot-v1" in done.stderr and "Traceback" not in done.stderr


def assert_numbers(out: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(out[key], (int, float)) and math.isfinite(out[key]) and out[key] >= 0, (key, out[key])


def test_atari_throughput_where_the_agent_acts_in_tensorflow_times_the_in_line_call_apart():
    """OpenBLAS told to use 2 threads: the CNN acts through TF, so the preset's overlap cannot run and each part is timed."""
    out = bench("atari_throughput.py", "--env", "Breakout", "--steps", "8", "--set", "learning_starts=64", "--set", "train_freq=4",
                "--set", "gradient_steps=1", "--set", "batch_size=8", "--set", "replay_capacity=1000", OPENBLAS_NUM_THREADS="2")
    assert (out["acting"], out["overlap_learning"]) == ("tensorflow", False)
    assert out["ms_per_sample"] > 0 and out["ms_per_update"] > 0 and out["ms_per_priority_update"] > 0, out


def test_batch_transfer_times_the_copy_into_tensors_apart_from_the_update():
    out = bench("batch_transfer.py", "--env", "Breakout", "--fill", "200", "--repeats", "2", "--set", "replay_capacity=1000",
                "--set", "gradient_steps=2", "--set", "batch_size=8")
    assert (out["env_id"], out["gradient_steps"], out["batch_size"]) == ("ALE/Breakout-v5", 2, 8)
    frames_mb = 2 * (2 * 8 * 84 * 84 * 4) / 2**20  # obs and next_obs: the stacks of K * B samples, uint8
    assert frames_mb <= out["batch_mb"] < frames_mb + 0.01  # plus actions, rewards and discounts
    assert_numbers(out, "ms_sample", "ms_to_tensor", "ms_update", "to_tensor_share")
    assert isinstance(out["cpu"], str) and isinstance(out["cpu_flags"], list)
    assert out["to_tensor_share"] == pytest.approx(out["ms_to_tensor"] / out["ms_update"], abs=1e-4)


def test_batch_transfer_refuses_a_replay_too_small_to_sample_in_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "batch_transfer.py"), "--fill", "10"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "--fill >= 100" in done.stderr and "Traceback" not in done.stderr


def test_atari_throughput_times_the_real_loop():
    from replay import FrameReplayBuffer

    out = bench("atari_throughput.py", "--env", "Breakout", "--steps", "8", "--set", "learning_starts=64", "--set", "train_freq=4",
                "--set", "gradient_steps=1", "--set", "batch_size=8", "--set", "replay_capacity=1000")
    timings = ("env_steps_per_s", "updates_per_s", "ms_per_update", "ms_per_sample", "ms_per_act", "ms_per_env_step", "ms_per_store",
               "peak_rss_mb", "fill_seconds")
    assert set(out) == {"env_id", "steps", "train_freq", "gradient_steps", "batch_size", "jit_compile", "acting", "precision", "replay_mb",
                        "prioritized", "ms_per_priority_update", "overlap_learning", "ms_per_wait", "ms_per_hooks", "cpu", "cpu_flags", *timings}
    from agent.core.device import describe_cpu

    assert (out["cpu"], out["cpu_flags"]) == tuple(describe_cpu().values())  # every timing names its CPU
    assert out["overlap_learning"] is (out["acting"] == "numpy")  # the preset overlaps where acting runs in numpy
    assert out["prioritized"] is True  # the Breakout preset learns from prioritized replay
    from agent.dqn.networks import _numpy_blas_name

    # the bench acts as train.py does: the Nature CNN in numpy where numpy's BLAS is OpenBLAS (then told to use one thread)
    assert out["acting"] == ("numpy" if "openblas" in _numpy_blas_name() else "tensorflow")
    assert (out["env_id"], out["steps"], out["train_freq"], out["gradient_steps"], out["batch_size"]) == ("ALE/Breakout-v5", 8, 4, 1, 8)
    assert_numbers(out, *timings)
    assert out["updates_per_s"] / out["env_steps_per_s"] == pytest.approx(1 / 4, rel=0.05)  # one update per 4 env steps, as the loop ran them
    assert out["replay_mb"] == round(FrameReplayBuffer.expected_nbytes(1000) / 2**20, 1)


def test_atari_throughput_overlaps_the_learner_calls_when_asked():
    out = bench("atari_throughput.py", "--env", "Breakout", "--steps", "16", "--set", "learning_starts=64", "--set", "train_freq=4",
                "--set", "gradient_steps=2", "--set", "batch_size=8", "--set", "replay_capacity=1000", "--set", "overlap_learning=true")
    assert out["overlap_learning"] is (out["acting"] == "numpy")  # overlap needs the numpy acting copy
    assert out["updates_per_s"] / out["env_steps_per_s"] == pytest.approx(2 / 4, rel=0.05)  # every call's updates were taken in


def test_replay_memory_reports_the_layouts_bytes():
    import numpy as np

    from replay import FrameReplayBuffer, ReplayBuffer

    out = bench("replay_memory.py", "--capacity", "1000", "--fill", "300", "--calls", "5")
    assert set(out) == {"capacity", "bytes_per_transition", "total_bytes", "allocated_nbytes", "stacked_ring_bytes", "sample_us", "batch_size", "add_us", "fill"}
    total = FrameReplayBuffer.expected_nbytes(1000, (84, 84), 4)
    assert (out["capacity"], out["total_bytes"], out["allocated_nbytes"], out["batch_size"], out["fill"]) == (1000, total, total, 32, 300)
    assert out["bytes_per_transition"] == total / 1000
    assert out["stacked_ring_bytes"] == ReplayBuffer.expected_nbytes(1000, (84, 84, 4), np.uint8)
    assert_numbers(out, "sample_us", "add_us")


def test_replay_persist_round_trips_and_cleans_up(tmp_path):
    from replay import FrameReplayBuffer

    out = bench("replay_persist.py", "--capacity", "500", "--dir", str(tmp_path))
    sizes = ("save_s", "sha256_s", "restore_s", "save_peak_extra_mib", "save_anon_extra_mib", "save_tracemalloc_peak_mib", "restore_peak_extra_mib",
             "restore_anon_extra_mib")
    assert set(out) == {"capacity", "replay_mib", "disk_mib", "identical", *sizes}
    assert out["capacity"] == 500 and out["identical"] is True
    mib = round(FrameReplayBuffer.expected_nbytes(500) / 2**20, 1)
    assert out["replay_mib"] == mib and mib <= out["disk_mib"] <= mib + 0.1  # the arrays, plus .npy headers
    assert_numbers(out, *sizes)
    assert list(tmp_path.iterdir()) == []  # its work directory is removed
