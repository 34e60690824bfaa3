"""A small progress bar on stderr: count, rate and ETA.

Redrawn in place on a terminal; on anything else (CI logs, `| tee`) one line every
ten seconds, so that a log stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(label: str, done: int, total: int, elapsed_s: float) -> str:
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    share = done / total if total else 1.0
    eta = format_duration((total - done) / rate) if rate > 0 and done < total else "-"
    return (f"{label:28} {done:>11,}/{total:,} {share:6.1%} {rate:>9,.0f}/s "
            f"ETA {eta} ({format_duration(elapsed_s)})")


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0
        self.done = 0

    def update(self, done: int, force: bool = False) -> None:
        self.done = done
        now = time.monotonic()
        interval = 0.2 if self.tty else 10.0
        if not force and now - self._drawn < interval:
            return
        self._drawn = now
        line = progress_line(self.label, done, self.total, now - self.started)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.update(self.done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
