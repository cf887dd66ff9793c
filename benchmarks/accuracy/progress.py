"""A one-line text progress bar on stderr (count, elapsed, estimated time left, what finished last)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, total: int, label: str, width: int = 30, stream=sys.stderr) -> None:
        self.total, self.label, self.width, self.stream = total, label, width, stream
        self.done = 0
        self.start = time.perf_counter()

    def update(self, note: str = "", step: int = 1) -> None:
        self.done += step
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        filled = int(self.width * self.done / max(self.total, 1))
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
            f"{_clock(elapsed)} elapsed, ~{_clock(left)} left  {note[:48]:<48}"
        )
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes:d}:{seconds:02d}"
