"""Messages and progress on stderr, shared by the CLI's commands and `imgen serve`."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback

import click


class Reporter:
    """Messages and progress on stderr: progress bars on a terminal, progress as plain lines on
    a terminal that cannot redraw one (TERM=dumb: an editor's shell, some CI consoles), none
    when stderr is a file or a pipe."""

    def __init__(self, quiet: bool, verbose: bool, debug: bool):
        self.quiet, self.verbose, self.debug = quiet, verbose, debug
        terminal = sys.stderr.isatty() and not quiet
        self.plain = terminal and os.environ.get("TERM") == "dumb"
        self.interactive = terminal and not self.plain
        # Lines stay whole when engine messages come from --jobs worker threads.
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        if not self.quiet:
            self._write(f"imgen: {message}")

    def info(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self._write(f"imgen: {message}")

    def _write(self, line: str) -> None:
        with self._lock:
            if self.interactive:  # above any progress bar instead of through it
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                click.echo(line, err=True)

    def error(self, error: BaseException) -> None:
        if self.debug:
            details = getattr(error, "details", None)
            if details:  # the plugin's own traceback, from where it failed to load
                sys.stderr.write(details)
            else:
                traceback.print_exception(error, file=sys.stderr)
        self._write(f"imgen: error: {error}")

    def progress(self, total: int, desc: str, unit: str):
        if self.plain:
            return PlainProgress(total, desc, unit, self._write)
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                    disable=not self.interactive, **_size())

    @contextlib.contextmanager
    def phase(self, message: str):
        """A step with no progress to count (encoding a big image): a status line on a terminal
        while it lasts, a plain line with -v or on a dumb terminal, nothing otherwise."""
        if self.interactive and not self.verbose:
            from tqdm import tqdm

            status = tqdm(total=0, desc=message, bar_format="{desc}", file=sys.stderr, leave=False, **_size())
            try:
                yield
            finally:
                status.close()
            return
        if self.verbose or self.plain:
            self.say(message)
        yield


def _size() -> dict:
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    # Some terminals (and ptys) report a 0x0 size, for which tqdm would draw nothing.
    return {"ncols": size.columns or 80, "nrows": size.lines or 24}


class PlainProgress:
    """A progress bar as whole lines, about every tenth of the way: no carriage returns, no
    escape sequences. Same update/close as tqdm's."""

    def __init__(self, total: int, desc: str, unit: str, write):
        self.total, self.desc, self.unit, self.write = total, desc, unit, write
        self.n = 0
        self.shown = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        # Lines at each tenth, and at the end; a bar of one step says nothing.
        if self.total > 1 and (self.n * 10 // self.total > self.shown * 10 // self.total or self.n >= self.total):
            self.shown = self.n
            self.write(f"imgen: {self.desc} {self.n}/{self.total} {self.unit} ({100 * self.n // self.total}%)")

    def close(self) -> None:
        pass
