"""Both replay memories follow one interface, and the replay package has no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import replay
from replay import FrameReplayBuffer, ReplayBuffer, ReplayMemory
from replay.base import rng_from_words, rng_to_words


@pytest.mark.parametrize("memory", [
    ReplayBuffer(16, (3,), np.float32, seed=0),
    FrameReplayBuffer(16, (8, 8), stack=2, seed=0),
], ids=["uniform", "frames"])
def test_both_memories_follow_the_protocol_and_name_their_kind(memory):
    assert isinstance(memory, ReplayMemory)
    assert memory.kind == {ReplayBuffer: "uniform", FrameReplayBuffer: "frames"}[type(memory)]
    assert len(memory) == 0 and memory.nbytes > 0


def test_rng_codec_continues_the_stream_exactly():
    rng = np.random.default_rng(123)
    rng.integers(0, 10, size=7)
    rng.random()  # leaves a cached 32-bit half in the state on some paths
    copy = rng_from_words(rng_to_words(rng))
    assert np.array_equal(copy.integers(0, 1 << 30, size=50), rng.integers(0, 1 << 30, size=50))


def _replay_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return {n for n in names if n.startswith("replay")}


def test_no_import_cycle_inside_replay():
    """base imports no memory; the memories import base (and nstep), never each other."""
    package = Path(replay.__file__).parent
    assert _replay_imports(package / "base.py") == set()
    assert _replay_imports(package / "uniform.py") == {"replay.base", "replay.nstep"}
    assert _replay_imports(package / "frames.py") == {"replay.base", "replay.nstep"}


@pytest.mark.parametrize("module", ["replay.frames", "replay.uniform"])
def test_each_memory_module_imports_alone_without_tensorflow(module):
    code = f"import sys, {module}; assert 'tensorflow' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
