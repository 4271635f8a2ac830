"""A terminal progress bar on stderr for the CLI; silent when stderr is not a terminal."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class ProgressBar:
    def __init__(self, stream=None, width: int = 30, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.perf_counter()
        self._drawn = False

    def update(self, info: dict) -> None:
        """Draw from a progress dict as produced by the fitter (phase, step, steps, loss, ...)."""
        if not self.enabled:
            return
        phase = info.get("phase", "")
        if not info.get("steps"):
            line = f"{phase}..."
        else:
            done, total = info["step"], max(1, info["steps"])
            filled = int(self.width * done / total)
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"{phase} [{bar}] {done}/{total}"
            if "loss" in info:
                line += f" loss {info['loss']:.3e}"
            if "elapsed" in info:
                line += f" {_clock(info['elapsed'])} elapsed, {_clock(info.get('remaining', 0))} left"
        self.stream.write("\r\033[K" + line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
