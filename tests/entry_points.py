"""Run an entry point (train.py, play.py) as a fresh Python process would, and say which heavy libraries it loaded.

The last line of stdout is `heavy modules loaded: [...]`: the tests that promise a path without TensorFlow (random
play, exported models, a refused resume) read it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "jax", "torch")
SCRIPT = f"""
import importlib, sys
module = importlib.import_module(sys.argv[1])
sys.argv = [sys.argv[1] + ".py", *sys.argv[2:]]
code = 0
try:
    module.main()
except SystemExit as e:
    code = e.code
print("heavy modules loaded:", sorted(m for m in {HEAVY!r} if m in sys.modules))
sys.exit(code)
"""


def run_entry_point(module: str, *args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python MODULE.py ARGS...` in the repository root, reporting the heavy modules it imported."""
    return subprocess.run([sys.executable, "-c", SCRIPT, module, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
