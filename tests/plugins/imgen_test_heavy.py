"""A plugin whose front module imports torch at the top, as `imgen plugins` warns about."""

import torch  # noqa: F401  (the point of this plugin)

from imgen_cli import Command, Tiling, hookimpl


@hookimpl
def register_commands(register):
    register(Command(name="heavy", help="Return the image as it is.", process=lambda x, ctx: x,
                     tiling=Tiling(overlap=0)))
