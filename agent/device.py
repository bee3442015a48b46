"""Which device TensorFlow computes on, said once when training starts.

The quiet import (`tfquiet.setup()` at the entry points) hides TensorFlow's start-up lines, CUDA loading
errors among them, so without this line a GPU machine could train on the CPU
unnoticed.
"""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name as `lscpu` prints it ("AMD EPYC 7B13", ...)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device() -> str:
    """One line: the GPU(s) TensorFlow will use, or the CPU and why no GPU."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name") or gpu.name)
            except (RuntimeError, ValueError):
                names.append(gpu.name)
        return f"GPU: {', '.join(names)}"
    if tf.test.is_built_with_cuda():
        return f"CPU ({cpu_model()}); no GPU visible to TensorFlow (TFDQN_VERBOSE_TF=1 shows its CUDA messages)"
    return f"CPU ({cpu_model()})"
