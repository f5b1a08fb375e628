"""Error types and the exit statuses they map to.

Every failure a user can cause or meet ends as one line, `imgen: error: <file>: <reason>`, and
an exit status that tells them apart:

=====  ==========================================================
0      everything was written (or skipped on request)
1      one or more inputs failed to process (the rest were written)
2      usage error: bad option, no input, unknown command
3      a plugin or model could not be loaded
130    interrupted (Ctrl-C); other stop signals give 128 + their number (SIGTERM 143, SIGHUP 129)
141    the reader of stdout went away (quietly, as `cat` does)
=====  ==========================================================
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
PLUGIN = 3
INTERRUPTED = 130
BROKEN_PIPE = 141


class Interrupted(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP, SIGQUIT) turned into the same unwinding as Ctrl-C, so that
    every `finally` runs and no temporary file survives; exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum


class ImgenError(Exception):
    """A failure to report in one line, optionally naming the file it concerns.

    `details` holds a traceback from elsewhere (a plugin's failed import) that `--debug` shows
    instead of this exception's own.
    """

    exit_code = FAILED

    def __init__(self, message: str, source: str | None = None, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source
        self.details = details

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


class InputError(ImgenError):
    """An input cannot be read or decoded, or is refused (too large, wrong size)."""


class OutputError(ImgenError):
    """An output cannot be written, or would overwrite something."""


class UsageError(ImgenError):
    """The command line asks for something impossible."""

    exit_code = USAGE


class PluginError(ImgenError):
    """A plugin failed to import or register, or its model failed to load."""

    exit_code = PLUGIN


class DeviceError(ImgenError):
    """The device asked for by name is not there or cannot run the model."""

    exit_code = USAGE


def reason(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to many lines), or its
    type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__
