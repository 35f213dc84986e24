"""Progress of long work: what the library reports, and the one-line display of the terminal.

The library takes a `Progress` callback: `progress(stage, done, total)`, with `stage` what is
being done ("resolving", "reading", "compressing"), `done` and `total` bytes of it (0 and 0
when not counted). `Display` shows it on a terminal as one line rewritten in place, from one
second after the start only (short runs print nothing), with the rate of the counted stages;
a thread redraws it while a stage gives no news (resolving). The command line decides whether
there is a terminal (cli/shared.py); nothing here reads the environment or the clock itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TextIO

Progress = Callable[[str, int, int], None]

DELAY = 1.0  # seconds of work before anything is shown
INTERVAL = 0.1  # seconds between redraws


class Display:
    """A Progress for a terminal `stream`, timed by `clock` (seconds). Use as a context
    manager: the line is cleared at the end, whatever ends the work."""

    def __init__(self, stream: TextIO, clock: Callable[[], float], delay: float = DELAY,
                 interval: float = INTERVAL) -> None:
        self._stream = stream
        self._clock = clock
        self._delay = delay
        self._interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._start = clock()
        self._stage = ""
        self._stage_start = self._start
        self._done = self._total = 0
        self._shown = False
        self._last_draw = 0.0
        self._ticker = threading.Thread(target=self._tick, name="slimmer-progress", daemon=True)

    def __enter__(self) -> Display:
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ticker.join()
        with self._lock:
            if self._shown:
                self._stream.write("\r\x1b[K")
                self._stream.flush()
                self._shown = False

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            now = self._clock()
            if stage != self._stage:
                self._stage, self._stage_start = stage, now
            self._done, self._total = done, total
            if now - self._last_draw >= self._interval:
                self._draw(now)

    def _tick(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                self._draw(self._clock())

    def _draw(self, now: float) -> None:
        """Called with the lock held."""
        if not self._stage or now - self._start < self._delay:
            return
        self._last_draw = now
        self._stream.write("\r\x1b[K" + line(self._stage, self._done, self._total,
                                             now - self._stage_start))
        self._stream.flush()
        self._shown = True


def line(stage: str, done: int, total: int, seconds: float) -> str:
    """`compressing 120.5/255.7 MB (47%), 48.2 MB/s`, or `resolving... 2s` for a stage that
    counts nothing."""
    if not total:
        return f"{stage}... {seconds:.0f}s"
    rate = done / seconds / 1e6 if seconds > 0 else 0.0
    return (f"{stage} {done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * done // total}%), "
            f"{rate:.1f} MB/s")
