"""Which device TensorFlow computes on, said once when training starts.

The quiet import (`tfquiet.setup()` at the entry points) hides TensorFlow's start-up lines, CUDA loading
errors among them, so without this line a GPU machine could train on the CPU
unnoticed.
"""

from __future__ import annotations

import platform
from pathlib import Path


BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bfloat16 natively


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first CPU's feature flags from /proc/cpuinfo (or the text given); empty where there is none (macOS, Windows)."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512_BF16 or AMX); elsewhere TF emulates it, slower than float32."""
    return any(flag in cpu_flags(cpuinfo) for flag in BFLOAT16_CPU_FLAGS)


def resolve_precision(precision: str, image_input: bool = True, cpuinfo: str | None = None, gpu: bool | None = None) -> str:
    """The compute precision a run uses: "float32" or "bfloat16".

    "auto" (the default) picks bfloat16 only where it is faster: a convolutional Q-network (image
    observations) on a CPU with native bfloat16 (`cpu_has_bfloat16`). Elsewhere it stays float32: on
    other CPUs bfloat16 is emulated (a Nature-CNN update took 170 ms instead of 23 ms on an AVX2 CPU),
    an MLP's small products are slower in bfloat16 even on an AMX CPU (CartPole's update 0.77 -> 1.02
    ms, `bench/update_flops.py --env CartPole-v1`), and a GPU stays float32 unless asked.
    """
    if precision != "auto":
        return precision
    if not image_input:
        return "float32"
    if gpu is None:
        gpu = bool(visible_gpus())
    return "bfloat16" if not gpu and cpu_has_bfloat16(cpuinfo) else "float32"


def describe_precision(precision: str, resolved: str, gpu: bool) -> str:
    """One line for the start of training: the compute precision, and why where "auto" chose it."""
    if resolved == "float32":
        why = "a GPU computes" if gpu else "this CPU has no AVX512_BF16/AMX"
        return f"float32 (auto: {why})" if precision == "auto" else "float32"
    if gpu:
        where = "on the GPU"
    elif cpu_has_bfloat16():
        where = "native on this CPU"
    else:
        where = "emulated on this CPU, which has no AVX512_BF16/AMX: expect it slower than float32"
    return f"mixed bfloat16 (bfloat16 compute; float32 weights, Q-values, loss and targets; {where})"


TIMING_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")  # what moves a CNN update's speed


def describe_cpu(cpuinfo: str | None = None) -> dict:
    """What to print beside a timing: the first CPU's model name and the vector instructions that decide
    these figures (from /proc/cpuinfo, or the text given; "unknown" and no flags where there is none)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(text)
    return {"cpu": _model_name(text) or "unknown", "cpu_flags": [flag for flag in TIMING_CPU_FLAGS if flag in flags]}


def _model_name(cpuinfo: str) -> str | None:
    """The first "model name" of /proc/cpuinfo's text; None where there is none."""
    return next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), None)


def cpu_model() -> str:
    """The CPU's model name as `lscpu` prints it ("AMD EPYC 7B13", ...)."""
    return _model_name(_cpuinfo()) or platform.processor() or platform.machine() or "unknown CPU"


def visible_gpus() -> list:
    """The GPUs TensorFlow will compute on (imports TensorFlow)."""
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def describe_device() -> str:
    """One line: the GPU(s) TensorFlow will use, or the CPU and why no GPU."""
    import tensorflow as tf

    gpus = visible_gpus()
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
