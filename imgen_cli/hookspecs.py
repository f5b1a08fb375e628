"""The hooks a plugin implements. Each docstring is the contract for that hook.

A plugin is any module registered in the `imgen` entry-point group (built-ins included) that
implements some of these with `@imgen_cli.hookimpl` (`@hookimpl(specname="register_models")` names
the hook explicitly; a function that only has a hook's name is not an implementation). Hooks are
called once per process, with a `register` callback owned by the host, so the host knows which
plugin registered what.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("imgen")
hookimpl = pluggy.HookimplMarker("imgen")


@hookspec
def register_commands(register):
    """Register the plugin's subcommands.

    Call `register(command)` once per `imgen_cli.Command`. Called once when the command tree is
    first built (`imgen --help`, `imgen plugins`, any command), so it must be cheap: build the
    descriptions only, without importing torch or loading weights. A command name already taken
    by another plugin is reported as an error of the later plugin and not registered.
    """


@hookspec
def register_models(register):
    """Register the networks the plugin's commands run.

    Call `register(model)` once per `imgen_cli.Model`. The model's `load` is not called here but
    when a command first needs the model, once per process and precision. At most one model per
    command should be `default=True`. Duplicate model names are reported as an error of the later
    plugin.
    """
