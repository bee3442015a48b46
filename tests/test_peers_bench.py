"""bench/peers: the side-by-side throughput bench against Stable-Baselines3 (its arithmetic and its missing-extra message)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_vs_sb3():
    spec = importlib.util.spec_from_file_location("vs_sb3", ROOT / "bench" / "peers" / "vs_sb3.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_takes_medians_spreads_and_pair_ratios():
    summary = load_vs_sb3().summarize([120.0, 100.0, 110.0], [50.0, 40.0, 60.0])
    assert summary["ours"] == 110.0 and summary["sb3"] == 50.0
    assert summary["ratio"] == 2.2
    assert summary["ours_spread"] == [100.0, 120.0] and summary["sb3_spread"] == [40.0, 60.0]
    assert summary["pair_ratios"] == [2.4, 2.5, 1.833]  # each of ours over the SB3 run before it


def test_summary_needs_a_run_on_each_side():
    with pytest.raises(ValueError, match="at least one run"):
        load_vs_sb3().summarize([100.0], [])


def test_cpu_description_names_the_first_model_and_the_vector_flags_that_matter():
    from agent.core.device import describe_cpu

    cpuinfo = ("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile\n\n"
               "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    assert describe_cpu(cpuinfo) == {"cpu": "Some CPU 9000", "cpu_flags": ["avx2", "fma", "avx512f", "avx512_bf16"]}
    assert describe_cpu("") == {"cpu": "unknown", "cpu_flags": []}
    assert load_vs_sb3().describe_cpu is describe_cpu  # the side by side prints the same


def test_the_peer_side_without_the_extra_is_one_line_and_exit_2():
    blocked = ("import sys, runpy; sys.modules['stable_baselines3'] = None; sys.argv = ['sb3_dqn.py', '--steps', '8'];"
               f"runpy.run_path({str(ROOT / 'bench' / 'peers' / 'sb3_dqn.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[peers]'" in lines[0], done.stderr


def load_sb3_dqn():
    spec = importlib.util.spec_from_file_location("sb3_dqn", ROOT / "bench" / "peers" / "sb3_dqn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # torch and SB3 load only inside main()
    return module


def test_our_cartpole_side_is_configured_as_the_zoos_cartpole_entry():
    """Same work on both sides: our config, built from the bench's --set arguments, has the zoo entry SB3 runs."""
    from agent.core.config import parse_overrides
    from agent.core.presets import resolve_config

    args = load_vs_sb3().our_bench_args("CartPole-v1", steps=2_000, fill=1_000, seed=3)
    sets = [args[i + 1] for i, arg in enumerate(args) if arg == "--set"]
    cfg = resolve_config(env_id="CartPole-v1", overrides={"seed": 3, **parse_overrides(sets)})
    zoo = load_sb3_dqn().ZOO["CartPole-v1"]
    assert cfg.hidden_sizes == tuple(zoo["policy_kwargs"]["net_arch"]) and not cfg.layer_norm and not cfg.dueling
    assert (cfg.batch_size, cfg.train_freq, cfg.gradient_steps) == (zoo["batch_size"], zoo["train_freq"], zoo["gradient_steps"])
    assert (cfg.target_update_period, cfg.learning_rate, cfg.epsilon_end) == (zoo["target_update_interval"], zoo["learning_rate"], zoo["epsilon"])
    assert not cfg.double_dqn and cfg.n_steps == 1 and cfg.learning_starts == 1_000
    assert args[args.index("--env") + 1] == "CartPole-v1" and args[args.index("--steps") + 1] == "2000"
    breakout = load_vs_sb3().our_bench_args("Breakout", steps=3_000, fill=5_000, seed=0)
    sets = [breakout[i + 1] for i, arg in enumerate(breakout) if arg == "--set"]
    cfg = resolve_config(env_id="Breakout", overrides=parse_overrides(sets))
    # the zoo's Nature DQN: uniform replay, a linear head, one update of batch 32 per 4 env steps
    assert not cfg.prioritized and not cfg.dueling and cfg.network == "nature_cnn" and cfg.learning_starts == 5_000
    assert (cfg.batch_size, cfg.gradient_steps / cfg.train_freq) == (32, 1 / 4)
