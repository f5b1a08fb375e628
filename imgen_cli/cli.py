"""The `imgen` command: a click group whose subcommands come from plugins.

Subcommands are built from the registry on demand, so `imgen --help` imports the plugins' light
front modules and nothing else (no torch, no numpy). A chain of commands is written with `+`
between them and runs in one process, tensors staying on the device between steps:

    imgen denoise --sigma 25 + sr --scale 2 in.jpg -o out.png
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import click

from . import __version__
from .contract import Command
from .errors import INTERRUPTED, BROKEN_PIPE, USAGE, ImgenError, PluginError, UsageError
from .metrics_cli import metrics
from .options import shared_params, verbosity_options
from .plugins import Registry, get_registry

CHAIN = "+"
HOST_COMMANDS = ("plugins", "models", "metrics")


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


class ImgenGroup(click.Group):
    """Commands come from the plugin registry; `+` chains them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._built: dict[str, click.Command] = {}

    @property
    def registry(self) -> Registry:
        return get_registry()

    def list_commands(self, ctx):
        names = set(self.registry.commands) | set(self.registry.broken_commands)
        return list(HOST_COMMANDS) + sorted(names - set(HOST_COMMANDS))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        registry = self.registry
        if name in registry.commands:
            command = registry.commands[name]
            key = f"{name}:{id(command)}"
            if key not in self._built:
                self._built[key] = build_command(command, registry)
            return self._built[key]
        if name in registry.broken_commands:
            return broken_command(name, registry.broken_commands[name])
        return None

    def resolve_command(self, ctx, args):
        # Shell completion of a chain (`imgen denoise + sr --sc<TAB>`) completes the last step;
        # right after a `+` it offers command names. Running a chain goes through invoke instead.
        if ctx.resilient_parsing and CHAIN in args:
            args = args[len(args) - args[::-1].index(CHAIN):]
            if not args:
                return None, None, []
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        args = [*ctx._protected_args, *ctx.args]
        if not args or args[0] in self.commands:
            return super().invoke(ctx)
        contexts = parse_chain(args, ctx)
        ctx._protected_args, ctx.args = [], []
        ctx.exit(run_chain(ctx, contexts))


def parse_chain(args: list[str], parent: click.Context | None = None) -> list[click.Context]:
    """Parse `CMD [OPTIONS] [+ CMD [OPTIONS]]...` into one click context per step (nothing runs)."""
    parent = parent or click.Context(cli, info_name="imgen")
    segments: list[list[str]] = [[]]
    for arg in args:
        if arg == CHAIN:
            segments.append([])
        else:
            segments[-1].append(arg)
    contexts = []
    for segment in segments:
        if not segment:
            raise click.UsageError(f"empty step in chain (a '{CHAIN}' with no command after it)", parent)
        name, rest = segment[0], segment[1:]
        command = cli.get_command(parent, name)
        if command is None:
            raise click.UsageError(f"no such command {name!r} (see imgen --help)", parent)
        if name in cli.commands:
            raise click.UsageError(f"{name!r} cannot be chained", parent)
        contexts.append(command.make_context(name, rest, parent=parent))
    return contexts


def build_command(command: Command, registry: Registry) -> click.Command:
    """A click command for a plugin command: its own params, its image inputs, the shared ones."""
    params: list[click.Parameter] = []
    models = [m for m in registry.models_for(command.name) if not m.name.startswith("file:")]
    if models or command.build_model or command.model_purposes:
        default = registry.default_model(command.name)
        names = ", ".join(m.name + (" (default)" if m is default else "") for m in models)
        params.append(click.Option(["--model"], metavar="NAME|FILE",
                                   help=f"Model to run: {names + '; ' if names else ''}or a weights file "
                                        "(.safetensors, .pth) or its name in the user model folder."))
    for spec in command.inputs:
        text = spec.help + (f" {spec.choices_help}" if spec.choices_help else "")
        params.append(click.Option([f"--{spec.name.replace('_', '-')}", spec.name], metavar="FILE|FOLDER",
                                   help=text.strip()))
    params.extend(command.params)
    params.extend(shared_params())
    return click.Command(
        command.name,
        params=params,
        help=command.help,
        short_help=command.help.strip().splitlines()[0] if command.help else None,
        callback=lambda **kwargs: None,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def broken_command(name: str, info) -> click.Command:
    def fail(**kwargs):
        raise fail.error

    fail.broken = True
    fail.error = PluginError(f"plugin {info.name!r} failed to load: {info.error}", name)
    return click.Command(
        name, callback=fail, help=f"(broken plugin {info.name}: {info.error})",
        short_help=f"(broken: {info.error})"[:80],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def _merge_shared(contexts: list[click.Context]) -> dict:
    """Shared options over all chain segments; explicit values must agree."""
    names = [p.name for p in shared_params()]
    merged: dict = {}
    explicit: dict = {}
    for sub in contexts:
        for name in names:
            value = sub.params.get(name)
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
                flag = name.replace("_", "-")
                raise UsageError(f"--{flag} is set to different values in the chain")
            explicit[name] = value
            merged[name] = value
    return merged


def steps_from_contexts(contexts: list[click.Context], require_inputs: bool = True):
    """(Step, {input name: (ImageInput, value)}) per parsed step. With `require_inputs`, a
    required image input missing from the command line is a usage error here."""
    from .engine import Step

    registry = get_registry()
    shared = {p.name for p in shared_params()}
    steps = []
    for sub in contexts:
        if getattr(sub.command.callback, "broken", False):
            raise sub.command.callback.error
        command = registry.commands[sub.info_name]
        image_inputs = {spec.name for spec in command.inputs}
        options = {k: v for k, v in sub.params.items() if k not in shared and k not in image_inputs and k != "model"}
        for spec in command.inputs:
            if require_inputs and spec.required and sub.params.get(spec.name) is None:
                raise UsageError(f"{command.name}: --{spec.name} is required")
        steps.append((Step(command, options=options, model=sub.params.get("model")),
                      {spec.name: (spec, sub.params.get(spec.name)) for spec in command.inputs}))
    return steps


def run_chain(ctx: click.Context, contexts: list[click.Context]) -> int:
    """Run the parsed chain over all inputs; returns the exit status."""
    from . import batch

    root = ctx.params
    try:
        opts = _merge_shared(contexts)
    except UsageError as exc:
        click.echo(f"imgen: error: {exc}", err=True)
        return USAGE
    reporter = Reporter(quiet=opts["quiet"] or root.get("quiet", False),
                        verbose=opts["verbose"] or root.get("verbose", False),
                        debug=opts["debug"] or root.get("debug", False))
    suffix = "-".join(sub.info_name for sub in contexts)
    settings = batch.Settings(output=opts["output"], format=opts["format"], quality=opts["quality"],
                              strip=opts["strip"], overwrite=opts["overwrite"],
                              skip_existing=opts["skip_existing"], max_pixels=opts["max_pixels"] or None)
    try:
        if settings.overwrite and settings.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other")
        steps = steps_from_contexts(contexts)
        sources = batch.expand_inputs(opts["inputs"], stdin_is_tty=_isatty(sys.stdin))
        jobs = batch.plan(sources, settings, suffix, stdout_is_tty=_isatty(sys.stdout))
        from .api import Pipeline

        pipeline = Pipeline.from_steps(steps, device=opts["device"], precision=opts["precision"],
                                       tile=opts["tile"], threads=opts["threads"], max_pixels=settings.max_pixels,
                                       info=reporter.info, progress=reporter.progress)
    except ImgenError as exc:
        reporter.error(exc)
        return exc.exit_code
    summary = batch.Summary()
    several = len(jobs) > 1
    bar = reporter.progress(total=len(jobs), desc="images", unit="img") if several else None
    try:
        for job in jobs:
            try:
                outcome = _run_job(job, pipeline, settings, reporter, derived=settings.output is None or
                                   (several or os.path.isdir(settings.output or "")))
            except ImgenError as exc:
                reporter.error(exc if exc.source else ImgenError(exc.message, job.source))
                summary.failed += 1
                if isinstance(exc, PluginError) or exc.exit_code == USAGE:
                    # the same failure would repeat for every input
                    return exc.exit_code
            except KeyboardInterrupt:
                click.echo("imgen: interrupted", err=True)
                return INTERRUPTED
            except BrokenPipeError:
                _silence_stdout()
                return BROKEN_PIPE
            except Exception as exc:  # a plugin bug: one line, and the traceback with --debug
                reporter.error(ImgenError(f"internal error: {type(exc).__name__}: {exc}", job.source))
                if reporter.debug:
                    traceback.print_exception(exc, file=sys.stderr)
                summary.failed += 1
            else:
                if outcome == "skipped":
                    summary.skipped += 1
                else:
                    summary.written += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if several:
        reporter.say(summary.line())
    return summary.exit_code


def _run_job(job, pipeline, settings, reporter, derived: bool) -> str:
    from . import batch
    from . import io as imageio_

    if job.output != batch.STDIO and os.path.exists(job.output):
        if settings.skip_existing:
            reporter.info(f"{job.output}: exists, skipped")
            return "skipped"
        if not settings.overwrite:
            raise ImgenError("exists (use --overwrite to replace it, --skip-existing to skip it)", job.output)
    picture = batch.read_source(job.source, settings.max_pixels)
    height, width = picture.array.shape[:2]
    picture.array = pipeline.run_array(picture.array, source=job.source)
    fmt = batch.output_format(job, picture)
    if derived and not job.format and job.output != batch.STDIO and picture.format not in imageio_.FORMATS:
        fmt = "png"
    if derived:
        batch.fix_extension(job, fmt)
        if job.output != batch.STDIO and os.path.exists(job.output) and not settings.overwrite:
            if settings.skip_existing:
                return "skipped"
            raise ImgenError("exists (use --overwrite to replace it)", job.output)
    data, warnings = imageio_.encode(picture, fmt, quality=settings.quality, strip=settings.strip)
    for warning in warnings:
        reporter.say(f"{job.source}: {warning}")
    batch.write_output(job, data, overwrite=settings.overwrite)
    if job.output != batch.STDIO:
        new_h, new_w = picture.array.shape[:2]
        reporter.say(f"wrote {job.output} ({width}x{height} -> {new_w}x{new_h})")
    return "written"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@click.group(cls=ImgenGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             invoke_without_command=False, no_args_is_help=True)
@click.version_option(__version__, "-V", "--version", prog_name="imgen")
@verbosity_options
def cli(quiet, verbose, debug):
    """Enhance images with generative models.

    Each command below comes from a plugin. Inputs are files, folders or - (stdin); outputs go
    beside the inputs, to -o FILE|FOLDER, or to stdout for stdin. Chain commands in one process
    with +:

        imgen denoise + sr --scale 2 photo.jpg -o photo-big.png
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List installed plugins, their commands and models."""
    registry = get_registry()
    rows = []
    for info in sorted(registry.plugins.values(), key=lambda i: (not i.builtin, i.name)):
        rows.append({
            "name": info.name,
            "version": info.version,
            "distribution": info.distribution,
            "builtin": info.builtin,
            "commands": info.commands,
            "models": info.models,
            "error": info.error,
        })
    _listing(rows, as_json, ("plugin", "version", "source", "commands", "models", "status"), lambda row: (
        row["name"], row["version"] or "-", "built-in" if row["builtin"] else "third-party",
        ", ".join(row["commands"]) or "-", ", ".join(row["models"]) or "-",
        f"[red]error: {row['error']}[/red]" if row["error"] else "ok"))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """List the models each command can run (--model NAME)."""
    from .models import user_model_dir, user_model_files

    registry = get_registry()
    rows = []
    for model in sorted(registry.models.values(), key=lambda m: (m.task, m.name)):
        size = os.path.getsize(model.weights) if model.weights and os.path.exists(model.weights) else None
        rows.append({"name": model.name, "task": model.task, "scale": model.scale, "default": model.default,
                     "precisions": list(model.precisions), "weights": model.weights, "bytes": size,
                     "description": model.description, "source": registry.model_owner(model.name)})
    for path in user_model_files():
        rows.append({"name": path.stem, "task": None, "scale": None, "default": False, "precisions": [],
                     "weights": str(path), "bytes": path.stat().st_size,
                     "description": f"user model in {user_model_dir()} (use with --model {path.stem})",
                     "source": "user"})
    _listing(rows, as_json, ("model", "command", "scale", "default", "size", "description"), lambda row: (
        row["name"], row["task"] or "any", f"x{row['scale']}" if row["scale"] else "?",
        "yes" if row["default"] else "", f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "-",
        row["description"]))


cli.add_command(metrics)


def _listing(rows: list[dict], as_json: bool, columns: tuple[str, ...], cells) -> None:
    """Rows as JSON, or as a table (rich, which honours NO_COLOR) with `cells(row)` per row."""
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*cells(row))
    # Piped listings keep whole names instead of rich's default 80 columns.
    Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False).print(table)


def main(argv=None) -> None:
    """Console entry point: click's parsing, our exits for Ctrl-C and closed pipes."""
    try:
        code = cli.main(args=argv, prog_name="imgen", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("imgen: interrupted", err=True)
        sys.exit(INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(BROKEN_PIPE)
    sys.exit(code if isinstance(code, int) else 0)


def _silence_stdout() -> None:
    # Python would complain again when flushing stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
