"""Progress of long work: a live bar in a terminal, a line every few percent anywhere else (a pipe, a CI log); every
few seconds when the total is unknown (a streamed manifest).

Either way the same lines can go to a log file, so a run directory says how the run went.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressReporter:
    """``update(done, info)`` as work proceeds; use as a context manager.

    In a terminal (``stream.isatty()``) a rich bar; otherwise a line ``label done/total (pct%) info, elapsed,
    ETA`` each time another ``every_percent`` of the work is done, and at the end. ``log_file`` receives those
    lines in both cases (appended). ``total=None`` (not known until the end): a spinner, or a line ``label done
    info, elapsed`` every ``every_seconds`` and one at the end.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        start: int = 0,
        enabled: bool = True,
        log_file: Path | None = None,
        every_percent: float = 5.0,
        every_seconds: float = 10.0,
        stream: IO[str] | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.label, self.start = label, start
        self.total = None if total is None else max(0, total)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        is_tty = getattr(self.stream, "isatty", lambda: False)
        self.terminal = enabled and (is_tty() if terminal is None else terminal)
        self.step = max(1, round(self.total * every_percent / 100)) if self.total else 1
        self.next_line = start + self.step
        self.every_seconds = every_seconds
        self.next_time = every_seconds  # seconds since the start of the next line, when the total is unknown
        self.done = start
        self.last_line_at: int | None = None  # ``done`` of the latest line written
        self.log_file = log_file
        self._log: IO[str] | None = None
        self.started = time.perf_counter()
        self.bar: Any = None

    def __enter__(self) -> ProgressReporter:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_file, "a", encoding="utf-8")  # noqa: SIM115 (closed in __exit__)
        if self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(f"[bold]{self.label}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(file=self.stream),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.start, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.total is None and self.done != self.last_line_at:
            self._write(self.line(self.done))  # the count reached, which only the end knows
        if self.bar is not None:
            self.bar.__exit__(*exc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def note(self, message: str) -> None:
        """A line of its own (what was chosen, a warning) on the stream and in the log file."""
        if self.enabled:
            if self.bar is not None:
                self.bar.console.print(message, highlight=False, markup=False)
            else:
                print(message, file=self.stream, flush=True)
        if self._log is not None:
            self._log.write(message + "\n")
            self._log.flush()

    def line(self, done: int, info: str = "") -> str:
        """The plain-text progress line for ``done`` units."""
        elapsed = time.perf_counter() - self.started
        if self.total is None:
            return "  ".join(part for part in (f"{self.label} {done:,}", info, f"elapsed {_clock(elapsed)}") if part)
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        pct = 100.0 * done / self.total if self.total else 100.0
        parts = [
            f"{self.label} {done}/{self.total} ({pct:.0f}%)",
            info,
            f"elapsed {_clock(elapsed)}",
            f"ETA {_clock(eta) if eta == eta else '?'}",
        ]
        return "  ".join(part for part in parts if part)

    def update(self, done: int, info: str = "") -> None:
        self.done = done
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=info)
        if self.total is None:
            since = time.perf_counter() - self.started
            if since < self.next_time or done == self.last_line_at:
                return
            self.next_time = (since // self.every_seconds + 1) * self.every_seconds
        elif (done < self.next_line and done < self.total) or done == self.last_line_at:
            return
        else:
            while self.next_line <= done:
                self.next_line += self.step
        self.last_line_at = done  # a caller that reports the end twice gets one line
        self._write(self.line(done, info))

    def _write(self, text: str) -> None:
        if self.enabled and self.bar is None:
            print(text, file=self.stream, flush=True)
        if self._log is not None:
            self._log.write(text + "\n")
            self._log.flush()
