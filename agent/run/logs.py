"""The run's logs: progress.csv and TensorBoard scalars, side by side, and trimming what a killed run wrote late.

A resume continues from its checkpoint's env step; rows and events a killed
run wrote after that step (and a torn last line) are dropped first, so the
logs read as if the run had never stopped.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.util import event_pb2

from common.files import atomic_path, atomic_write_bytes

CSV_FIELDS = [
    "env_step", "episodes", "updates", "wall_time_s", "train_time_s", "steps_per_s", "epsilon",
    "train_return_mean", "loss", "q_mean", "eval_return_mean", "eval_return_std",
]


class ProgressLog:
    """progress.csv and TensorBoard scalars, written side by side (the paths: `RunDirectory.progress_csv`, `.tensorboard_dir`)."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path):
        self.path = csv_path
        new = not self.path.exists() or self.path.stat().st_size == 0  # a process killed before its header reached the disk
        self.file = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_FIELDS)
        if new:
            self.writer.writeheader()
        self.tb = tf.summary.create_file_writer(str(tensorboard_dir))

    def write(self, row: dict) -> None:
        self.writer.writerow({k: _fmt(row.get(k)) for k in CSV_FIELDS})
        self.file.flush()
        with self.tb.as_default(step=int(row["env_step"])):
            for key, value in row.items():
                if key != "env_step" and value is not None and np.isfinite(value):
                    tf.summary.scalar(key, value)
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()

    def __enter__(self) -> ProgressLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def trim_progress_csv(path: Path, step: int) -> int:
    """Drop rows after `step` (and a half-written last line) that a killed run left; returns rows dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return 0
    header = next(csv.reader([lines[0]]))
    kept = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        try:
            ok = line.endswith("\n") and len(row) == len(header) and int(row[0]) <= step
        except ValueError:
            ok = False
        if ok:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write_bytes(path, "".join(kept).encode("utf-8"))
    return dropped


def trim_tensorboard(tb_dir: Path, step: int) -> int:
    """Rewrite event files without the events after `step` (or a torn last record); returns events dropped."""
    dropped = 0
    if not tb_dir.is_dir():
        return 0
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        events, torn = [], False
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                events.append(event_pb2.Event.FromString(record.numpy()))
        except tf.errors.DataLossError:
            torn = True
        late = sum(1 for e in events if e.step > step)
        if not late and not torn:
            continue
        with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for event in events:
                if event.step <= step:
                    writer.write(event.SerializeToString())
        dropped += late
    return dropped
