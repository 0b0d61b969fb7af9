"""Progress of a long command (`hub load`, `hub export`, `hub demo`) for a
person watching it: on a terminal, one line redrawn in place with a bar,
the rate and the time left; anywhere else (a log, a CI job, a pipe), a plain
line every few seconds, never a carriage return."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def duration(seconds: float) -> str:
    """4s, 3m07s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """`update(done)` as work advances (an absolute count), `finish()` at the end.

    `total` may be unknown (None): then no bar and no time left, only the
    count and the rate. The rate is over the last `window_s` seconds, so a
    stall shows as a falling rate instead of hiding in an average."""

    def __init__(self, label: str, total: int | None = None, unit: str = "records", stream: TextIO | None = None,
                 every_s: float = 5.0, tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 width: int = 24, window_s: float = 10.0):
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = 0.2 if self.tty else every_s
        self.clock = clock
        self.width = width
        self.window_s = window_s
        self.started = clock()
        self.done = 0
        self.extra = ""
        self._samples: list[tuple[float, int]] = [(self.started, 0)]
        self._last_shown = self.started
        self._drawn = 0

    def rate(self) -> float:
        now, done = self._samples[-1]
        then, before = self._samples[0]
        return (done - before) / (now - then) if now > then else 0.0

    def line(self) -> str:
        """What is shown now (without \\r or newline)."""
        rate = self.rate()
        parts = [self.label]
        if self.total:
            share = min(self.done / self.total, 1.0)
            if self.tty:
                filled = int(share * self.width)
                parts.append("[" + "#" * filled + "." * (self.width - filled) + "]")
            parts.append(f"{self.done:,}/{self.total:,} {self.unit} ({share:.0%})")
        else:
            parts.append(f"{self.done:,} {self.unit}")
        parts.append(f"{rate:,.0f}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {duration((self.total - self.done) / rate)}")
        parts.append(f"elapsed {duration(self.clock() - self.started)}")
        if self.extra:
            parts.append(self.extra)
        return "  ".join(parts)

    def update(self, done: int, extra: str = "", total: int | None = None) -> None:
        now = self.clock()
        self.done = done
        self.extra = extra or self.extra
        if total is not None:
            self.total = total
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)
        if now - self._last_shown >= self.every_s:
            self._show()
            self._last_shown = now

    def _show(self, final: bool = False) -> None:
        text = self.line()
        if self.tty:
            pad = max(0, self._drawn - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._drawn = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, extra: str = "") -> None:
        """The last line, with the average rate over the whole run."""
        now = self.clock()
        self.extra = extra or self.extra
        self._samples = [(self.started, 0), (now, self.done)]
        self._show(final=True)
