"""Import TensorFlow without its start-up chatter.

TensorFlow 2.21 prints absl/CUDA-stub lines straight to file descriptor 2 at
import time, before `TF_CPP_MIN_LOG_LEVEL` is consulted, so the descriptor is
pointed at /dev/null for the import only. Import errors still raise as usual.
Every module of ours that needs TensorFlow or Keras imports this first.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_quietly() -> None:
    if "tensorflow" in sys.modules or os.environ.get("TFDQN_VERBOSE_TF"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_quietly()
