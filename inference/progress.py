"""Progress that reads well where it lands: a tqdm bar on a terminal, plain lines in a log.

When stderr is not a terminal (a log file, CI, ``nohup``), a bar would write thousands of
carriage returns; :func:`bar` is then silent and :class:`EpochLines` prints one line per epoch
(at most one every ``every`` seconds, and always the last one) instead.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether stderr is a terminal (bars redraw in place) rather than a file or a pipe."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar when ``enabled`` and stderr is a terminal; a silent pass-through otherwise."""
    return tqdm(iterable, disable=not (enabled and interactive()), **kwargs)


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


__all__ = ["interactive", "bar", "EpochLines"]
