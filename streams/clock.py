"""The clock the release timer, ingest's progress and the command line's cancels read:
the machine's, or one that runs from a given instant at a given speed (for the demo
and tests, so that a sending window opens during a short run).

`SMSCOOL_CLOCK` is empty (the machine's clock) or `START_MS@WALL_MS*SPEED`: at the
machine's epoch millisecond WALL_MS the clock reads START_MS, and it runs SPEED times as
fast as the machine's (e.g. `1767250740000@1767100000000*60`, a minute a second).
Decisions never read it: a trigger is decided at its Kafka timestamp.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_SPEC = re.compile(r"(?P<start>-?\d+)@(?P<wall>-?\d+)\*(?P<speed>\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Clock:
    start_ms: int = 0
    wall_ms: int = 0
    speed: float = 1.0

    @classmethod
    def parse(cls, spec: str) -> Clock:
        spec = spec.strip()
        if not spec:
            return cls()
        match = _SPEC.fullmatch(spec)
        if not match or float(match["speed"]) <= 0:
            raise ValueError(f"SMSCOOL_CLOCK must be START_MS@WALL_MS*SPEED (speed above "
                             f"zero), e.g. 1767250740000@1767100000000*60; got {spec!r}")
        return cls(int(match["start"]), int(match["wall"]), float(match["speed"]))

    def spec(self) -> str:
        return "" if self == Clock() else f"{self.start_ms}@{self.wall_ms}*{self.speed:g}"

    @classmethod
    def starting_at(cls, start_ms: int, speed: float = 1.0) -> Clock:
        """A clock that reads `start_ms` now and runs `speed` times as fast."""
        return cls(start_ms, time.time_ns() // 1_000_000, speed)

    def ms_ago(self, wall_ms: int) -> int:
        """What the clock read `wall_ms` of the machine's milliseconds ago."""
        return self.now_ms() - round(wall_ms * self.speed)

    def now_ms(self) -> int:
        wall = time.time_ns() // 1_000_000
        if self.speed == 1.0 and self.start_ms == self.wall_ms:
            return wall
        return self.start_ms + round((wall - self.wall_ms) * self.speed)
