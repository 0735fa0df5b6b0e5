"""Progress that reads well where it lands: a tqdm bar on a terminal, plain lines in a log.

When stderr is not a terminal (a log file, CI, ``nohup``), a bar would write thousands of
carriage returns; :func:`bar` then gives :class:`LogLines`, which prints a plain line
(done/total, elapsed, time left) at most once a minute, so a short job stays quiet and a
twenty-minute evaluation says where it is. The training loop prints its own line per epoch
(:class:`EpochLines`) instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether stderr is a terminal (bars redraw in place) rather than a file or a pipe."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, log_lines: bool = True, every: float = 60.0,
        **kwargs: Any) -> tqdm | LogLines:
    """A tqdm bar on a terminal; off one, :class:`LogLines` (one every ``every`` s), or silence.

    Parameters
    ----------
    iterable, kwargs
        As for ``tqdm`` (``desc``, ``total``, ``initial``, ``unit``; ``leave`` only on a terminal).
    enabled
        False: no output at all.
    log_lines
        Off a terminal, whether to print lines (False where the caller prints its own).
    every
        Least seconds between two log lines.
    """
    if enabled and not interactive() and log_lines:
        return LogLines(iterable, every=every, **kwargs)
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)


class LogLines:
    """Progress for a log: ``desc: n/total (p %), elapsed s, ~left s`` on stderr, at most one line every ``every`` s.

    Nothing is printed before ``every`` seconds have passed, so short work stays quiet; once a
    line has gone out, :meth:`close` prints a last one. Time left assumes the rate so far:
    ``(total - n) * elapsed / (n - initial)``. Supports what the library's loops use of tqdm:
    iteration, ``update``, ``set_postfix``, ``close``.
    """

    def __init__(self, iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None,
                 initial: int = 0, unit: str = "it", every: float = 60.0, **_terminal_only: Any) -> None:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.desc, self.total, self.unit, self.every = iterable, desc or "progress", total, unit, every
        self.n = self.initial = initial
        self.start = self.last = time.monotonic()
        self.printed, self.printed_n, self.closed, self.postfix = False, None, False, ""

    def __iter__(self):
        try:
            for item in self.iterable if self.iterable is not None else ():
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; print a line if ``every`` seconds passed since the last (or the start)."""
        if self.closed:
            return
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self._line(now)

    def set_postfix(self, **values: Any) -> None:
        """Text appended to the next line (``key=value`` pairs, as tqdm's)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """The last line, if any was printed before and the count moved since; idempotent."""
        if not self.closed and self.printed and self.printed_n != self.n:
            self._line(time.monotonic())
        self.closed = True

    def _line(self, now: float) -> None:
        elapsed, done = now - self.start, self.n - self.initial
        text = f"{self.desc}: {self.n}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.n / self.total:.0f} %)"
            if 0 < done and self.n < self.total:
                text += f", {elapsed:.0f} s, ~{(self.total - self.n) * elapsed / done:.0f} s left"
            else:
                text += f", {elapsed:.0f} s"
        else:
            text += f" {self.unit}, {elapsed:.0f} s"
        print(text + (f", {self.postfix}" if self.postfix else ""), file=sys.stderr, flush=True)
        self.last, self.printed, self.printed_n = now, True, self.n


class EpochLines:
    """One line per epoch on stderr for logs, when enabled and stderr is not a terminal."""

    def __init__(self, label: str, total: int, *, enabled: bool, every: float = 10.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.on = enabled and not interactive()
        self.last = -float("inf")

    def __call__(self, epoch: int, text: str) -> None:
        """Print ``label: epoch e/E, text`` unless a line went out less than ``every`` seconds ago (the last always goes)."""
        now = time.monotonic()
        if self.on and (now - self.last >= self.every or epoch == self.total):
            print(f"{self.label}: epoch {epoch}/{self.total}, {text}", file=sys.stderr, flush=True)
            self.last = now


__all__ = ["interactive", "bar", "LogLines", "EpochLines"]
