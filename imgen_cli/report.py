"""Messages and progress on stderr, shared by the CLI's commands and `imgen serve`."""

from __future__ import annotations

import os
import sys
import traceback

import click


class Reporter:
    """Messages and progress on stderr; progress bars only on a terminal."""

    def __init__(self, quiet: bool, verbose: bool, debug: bool):
        self.quiet, self.verbose, self.debug = quiet, verbose, debug
        self.interactive = sys.stderr.isatty() and not quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            self._write(f"imgen: {message}")

    def info(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self._write(f"imgen: {message}")

    def _write(self, line: str) -> None:
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
        from tqdm import tqdm

        try:
            size = os.get_terminal_size(sys.stderr.fileno())
        except (OSError, ValueError):
            size = os.terminal_size((0, 0))
        # Some terminals (and ptys) report a 0x0 size, for which tqdm would draw nothing.
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                    disable=not self.interactive, ncols=size.columns or 80, nrows=size.lines or 24)
