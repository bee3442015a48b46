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
    cpuinfo = ("processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile\n\n"
               "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    assert load_vs_sb3().cpu_description(cpuinfo) == {"cpu": "Some CPU 9000", "cpu_flags": ["avx2", "fma", "avx512f", "avx512_bf16"]}
    assert load_vs_sb3().cpu_description("") == {"cpu": "unknown", "cpu_flags": []}


def test_the_peer_side_without_the_extra_is_one_line_and_exit_2():
    blocked = ("import sys, runpy; sys.modules['stable_baselines3'] = None; sys.argv = ['sb3_dqn.py', '--steps', '8'];"
               f"runpy.run_path({str(ROOT / 'bench' / 'peers' / 'sb3_dqn.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[peers]'" in lines[0], done.stderr
