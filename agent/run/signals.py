"""Ctrl-C and SIGTERM as a request the training loop honours after a whole env step."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM become a request the loop honours after a whole env step, so the
    checkpoint it saves is exact. A second signal raises KeyboardInterrupt at once (no checkpoint;
    the last complete one stays). Only the main thread can install handlers; elsewhere this is inert."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name if self.signum else ""
