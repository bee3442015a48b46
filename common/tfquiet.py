"""TensorFlow without its start-up chatter, with oneDNN kernels on: one call at each entry point.

TensorFlow 2.21 prints absl/CUDA-stub lines straight to file descriptor 2 at
import time, before `TF_CPP_MIN_LOG_LEVEL` is consulted, so `setup()` points
the descriptor at /dev/null for the import only (import errors still raise).
The entry points (train.py, play.py, `python -m classic`, the benches, the
tests' conftest) call it before they import anything that imports
TensorFlow; the library modules import TensorFlow as usual, so a program of
your own that imports them gets TensorFlow's default behaviour unless it
calls `tfquiet.setup()` first.
"""

from __future__ import annotations

import os
import sys


def setup() -> None:
    """Set TensorFlow's environment and import it quietly; safe to call more than once.

    `TFDQN_VERBOSE_TF=1` keeps TensorFlow's own messages (CUDA loading, for one).
    """
    set_environment()
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


def set_environment() -> None:
    """Only the environment variables of `setup()`, without importing TensorFlow: call it before anything imports
    numpy (a script whose top-level imports load numpy calls this first, then `setup()` when it needs TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow turns its oneDNN kernels on by default only on some Intel CPUs.
    # On this project's AMD EPYC machines they make the Nature-CNN update 30%
    # faster (44 -> 30 ms per batch of 32, measured), so we ask for them everywhere.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    # numpy's BLAS does only acting's small products (agent.networks.NumpyPolicy); left multi-threaded, its idle
    # threads spin and slow TensorFlow's Nature-CNN update from 53 to 65 ms on 2 cores (measured). Read at numpy's import.
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
