"""The chain language: `CMD [OPTIONS] [+ CMD [OPTIONS]]...` parsed against a registry.

One parser serves the CLI, the Python API and every other front end (a service, a Ray job):

    from imgen_cli import chain
    steps = chain.parse(["denoise", "--sigma", "25", "+", "sr", "--scale", "2"], registry)

Each plugin command becomes a click command built here from its `Command` description (its own
options, its image inputs, the shared ones of `options.py`); parsing checks every value and runs
nothing. `parse` raises `imgen_cli.UsageError` for anything wrong; the CLI calls `parse_contexts`
instead, so click can print its usage hints.

Shared options (inputs, -o, --device, ...) may be set in any step; `merge_shared` combines them and
refuses values that disagree. Inputs may be given in one step only. The step options of
`options.step_params` are the host's but each step's own: `--blend` mixes that step's result with
its input; the output size (`--width`, `--height`, `--fit`) applies to the chain's output wherever
it is written (`output_size`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import click

from .contract import Command, ImageInput
from .errors import PluginError, UsageError
from .io import EXTENSIONS, READ_ONLY
from .models import SUFFIXES as MODEL_SUFFIXES
from .options import (ExampleCommand, NameOrPath, finite_floats, generic_examples, shared_defaults, shared_params,
                      step_params,
                      verbosity_options, withheld)
from .sizing import Target, target

CHAIN = "+"
# Files the shell lists beside built-in names (see options.NameOrPath).
IMAGE_SUFFIXES = (*EXTENSIONS, *(f".{fmt}" for fmt in READ_ONLY))
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass(frozen=True)
class StepSpec:
    """One step as written: the command, its own option values, `--model` and the image inputs.

    Args:
        command: the registered command.
        options: its own options by parameter name (shared options and image inputs left out).
        model: the `--model` value, or None.
        inputs: image input name -> (its ImageInput, the value given or None).
        blend: `--blend`, mixing this step's result with its input (1: the result).
        size: the output size written in this step (`--width`, `--height`, `--fit`), or None;
            it applies to the chain's output (see `output_size`).
    """

    command: Command
    options: Mapping[str, Any]
    model: str | None
    inputs: Mapping[str, tuple[ImageInput, Any]]
    blend: float = 1.0
    size: Target | None = None

    def check_inputs(self, given: Mapping[str, bool]) -> None:
        """Usage errors for missing required image inputs and for what the command's `validate`
        refuses; `given` says which image inputs have a value."""
        for name, (spec, _) in self.inputs.items():
            if spec.required and not given.get(name):
                raise UsageError(f"{self.command.name}: --{name.replace('_', '-')} is required")
        if self.command.validate is not None:
            self.command.validate(dict(self.options), {name: bool(given.get(name)) for name in self.inputs})


def split(words: list[str]) -> list[list[str]]:
    """The words of each step, split at `+`."""
    segments: list[list[str]] = [[]]
    for word in words:
        if word == CHAIN:
            segments.append([])
        else:
            segments[-1].append(word)
    return segments


def parse_contexts(words: list[str], registry, parent: click.Context | None = None,
                   reserved: tuple[str, ...] = ()) -> list[click.Context]:
    """One click context per step (click's own exceptions on bad words); `reserved` names host
    commands that cannot be chained."""
    contexts = []
    for index, segment in enumerate(split(list(words))):
        if not segment:
            raise click.UsageError(f"empty step in chain (a '{CHAIN}' with no command after it)", parent)
        name, rest = segment[0], segment[1:]
        if name in reserved:
            raise click.UsageError(f"{name!r} cannot be chained", parent)
        command = click_command(registry, name)
        if command is None:
                        # A host command is a suggestion only where it could stand: first on imgen's own
            # command line (`imgen plugn`), not after a `+`, nor in `imgen ray` or a request.
            top = index == 0 and parent is not None and parent.parent is None
            names = commands(registry) + (list(reserved) if top else [])
            raise click.UsageError(f"no such command {name!r}{did_you_mean(name, names)}", parent)
        contexts.append(command.make_context(name, rest, parent=parent))
    return contexts


def commands(registry) -> list[str]:
    """The names of the commands that can be steps of a chain (plugin commands, broken ones too)."""
    return sorted(set(registry.commands) | set(registry.broken_commands))


def did_you_mean(word: str, names) -> str:
    """` (did you mean 'x' or 'y'?)` for the names close to a mistyped `word`, else ''."""
    import difflib

    close = difflib.get_close_matches(word, list(names), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(name) for name in close) + "?)"


def click_message(exc: click.ClickException) -> str:
    """A click error's message in imgen's words: a lower-case clause, a suggestion for a
    mistyped option, the reason a command does not take an option every other one has."""
    if isinstance(exc, click.NoSuchOption):
        command = exc.ctx.command if exc.ctx is not None else None
        reason = getattr(command, "imgen_withheld", {}).get(exc.option_name)
        if reason:
            return f"{exc.option_name}: not an option of {exc.ctx.info_name} ({reason})"
        return f"no such option {exc.option_name!r}{did_you_mean(exc.option_name, exc.possibilities or ())}"
    message = exc.format_message().strip()
    # click's sentences ("Invalid value for '--kind': ...") read as imgen's lower-case clauses.
    return message[0].lower() + message[1:] if message[:2].istitle() else message


def specs(contexts: list[click.Context], registry) -> list[StepSpec]:
    """The StepSpec of every parsed step; a broken plugin's command raises its PluginError."""
    shared = {p.name for p in shared_params()} | {p.name for p in step_params()}
    steps = []
    for sub in contexts:
        broken = getattr(sub.command, "imgen_error", None)
        if broken is not None:
            raise broken
        command = registry.commands[sub.info_name]
        image_inputs = {spec.name for spec in command.inputs}
        options = {k: v for k, v in sub.params.items() if k not in shared and k not in image_inputs and k != "model"}
        for spec in command.inputs:
            check_name(spec, sub.params.get(spec.name))
        steps.append(StepSpec(command, options, sub.params.get("model"),
                              {spec.name: (spec, sub.params.get(spec.name)) for spec in command.inputs},
                              blend=sub.params.get("blend", 1.0),
                              size=target(sub.params.get("width"), sub.params.get("height"), sub.params.get("fit"))))
    output_size(steps)
    return steps


def output_size(steps: list[StepSpec]) -> Target | None:
    """The size of the chain's output: given in any step (or several that agree), or None."""
    sizes = {step.size for step in steps if step.size is not None}
    if len(sizes) > 1:
        raise UsageError("the output size is set to different values in the chain (" +
                         ", ".join(sorted(str(size) for size in sizes)) + "): give it once")
    return next(iter(sizes), None)


def check_name(spec: ImageInput, value: str | None) -> None:
    """A usage error for an image input with built-in names whose value is neither an existing
    file or folder nor one of those names."""
    if value is None or spec.names is None or os.path.exists(value):
        return
    if spec.resolve is not None and spec.resolve(value):
        return
    names = list(spec.names())
    raise UsageError(f"--{spec.name.replace('_', '-')} {value}: neither a file nor a built-in {spec.name}"
                     f"{did_you_mean(value.lower(), names)}; built-in: {', '.join(names)}")


def parse(words: list[str], registry, reserved: tuple[str, ...] = ()) -> list[StepSpec]:
    """Parse a chain into steps, raising imgen's UsageError (or PluginError) and never click's."""
    try:
        contexts = parse_contexts(words, registry, click.Context(_root, info_name="imgen"), reserved)
    except click.ClickException as exc:
        raise UsageError(click_message(exc)) from None
    return specs(contexts, registry)


# click wants a parent context to name the program in messages; the API has no real group.
_root = click.Group("imgen")


def merge_shared(contexts: list[click.Context]) -> dict:
    """Shared options over all steps; values set explicitly in two steps must agree."""
    defaults = shared_defaults()
    merged: dict = {}
    explicit: dict = {}
    for sub in contexts:
        for name in defaults:
            if name not in sub.params:  # an option this step does not offer (see options.withheld)
                continue
            value = sub.params[name]
            source = sub.get_parameter_source(name)
            is_explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
            if name not in merged:
                merged[name] = value
            if not is_explicit:
                continue
            if name == "inputs":
                if not value:
                    continue
                if explicit.get(name):
                    raise UsageError("give inputs in one step of the chain only")
            elif name in explicit and explicit[name] != value:
                raise UsageError(f"--{name.replace('_', '-')} is set to different values in the chain")
            explicit[name] = value
            merged[name] = value
    return {**defaults, **merged}


# -- click commands built from registrations ---------------------------------------------------

_built: dict[int, tuple[Command, click.Command]] = {}


def click_command(registry, name: str) -> click.Command | None:
    """The click command for plugin command `name` (built once per registration), a stand-in that
    fails with the plugin's error for a broken plugin's command, or None."""
    if name in registry.commands:
        command = registry.commands[name]
        entry = _built.get(id(command))
        if entry is None or entry[0] is not command:
            entry = _built[id(command)] = (command, build_command(command, registry))
        return entry[1]
    if name in registry.broken_commands:
        return broken_command(name, registry.broken_commands[name])
    return None


def _model_names(registry, command: Command):
    """`--model`'s names for the shell: the command's registered models and the user folder's."""
    def names() -> list[str]:
        from .models import user_model_files

        return [m.name for m in registry.models_for(command.name)] + [p.stem for p in user_model_files()]

    return names


def build_command(command: Command, registry) -> click.Command:
    """A click command for a plugin command: its own params, its image inputs, the shared ones."""
    params: list[click.Parameter] = []
    models = registry.models_for(command.name)
    if models or command.build_model or command.model_purposes:
        default = registry.default_model(command.name)
        names = ", ".join(m.name + (" (default)" if m is default else "") for m in models)
        params.append(click.Option(["--model"], metavar="NAME|FILE", type=NameOrPath(_model_names(registry, command), MODEL_SUFFIXES),
                                   help=f"Model to run: {names + '; ' if names else ''}or a weights file "
                                        "(.safetensors, .pth) or its name in the user model folder."))
    for spec in command.inputs:
        text = spec.help + (f" {spec.choices_help}" if spec.choices_help else "")
        params.append(click.Option([f"--{spec.name.replace('_', '-')}", spec.name], metavar="FILE|FOLDER",
                                   type=NameOrPath(spec.names, IMAGE_SUFFIXES) if spec.names else click.Path(),
                                   help=text.strip()))
    params.extend(finite_floats(command.params))
    params.extend(step_params())
    params.extend(shared_params(command))
    built = ExampleCommand(
        command.name,
        params=params,
        help=command.help,
        short_help=command.help.strip().splitlines()[0] if command.help else None,
        callback=lambda **kwargs: None,
        context_settings=CONTEXT_SETTINGS,
        examples=list(command.examples) or generic_examples(command),
    )
    # Options every other command has, left out here: giving one says why (see cli.ImgenUsage).
    built.imgen_withheld = {f"--{name}": reason for name, reason in withheld(command).items()}
    return built


def broken_command(name: str, info) -> click.Command:
    """A command that takes any words and fails with the plugin's load error (exit status 3)."""
    error = PluginError(f"plugin {info.name!r} failed to load: {info.error}", name, details=info.traceback)

    def fail(**kwargs):
        raise error

    command = click.Command(
        name, callback=fail, help=f"(broken plugin {info.name}: {info.error})",
        params=list(verbosity_options(lambda: None).__click_params__),
        short_help=f"(broken: {info.error})"[:80],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    command.imgen_error = error
    return command
