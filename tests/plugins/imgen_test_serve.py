"""A test plugin for `imgen serve`: a command that takes a known time, to fill the server's queue
and to keep a request in flight. Loaded through IMGEN_PLUGINS."""

import click

from imgen_cli import Command, Tiling, hookimpl


def _wait(x, ctx):
    import time

    time.sleep(ctx.options["seconds"])
    return x


@hookimpl
def register_commands(register):
    register(Command(name="wait", help="Sleep, then return the image unchanged.", process=_wait,
                     params=[click.Option(["--seconds"], type=click.FloatRange(0, 60), default=1.0)],
                     tiling=Tiling(tileable=False)))
