"""The `imgen` command: a click group whose subcommands come from plugins.

Subcommands are built from the registry on demand, so `imgen --help` imports the plugins' light
front modules and nothing else (no torch, no numpy). A chain of commands is written with `+`
between them and runs in one process, tensors staying on the device between steps:

    imgen denoise --sigma 25 + sr --scale 2 in.jpg -o out.png
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

from . import __version__
from . import chain
from .batch import silence_stdout
from .errors import BROKEN_PIPE, INTERRUPTED, USAGE, ImgenError, Interrupted, UsageError
from .metrics_cli import metrics
from .options import ExampleCommand, WithExamples, verbosity_options
from .plugins import Registry, get_registry
from .report import Reporter
from .scaleout import ray_command
from .serve import serve

HOST_COMMANDS = ("plugins", "models", "metrics", "serve", "ray", "install", "uninstall")

# `imgen --help` and imgen(1): (command line, what it does).
EXAMPLES = [
    ("imgen sr photo.jpg", "Upscale a photo 4x with the default model (writes photo-sr-x4.jpg)"),
    ("imgen sr --scale 2 --kind fidelity scan.png -o scan-2x.png",
     "Upscale 2x with the model for clean images, into a chosen file"),
    ("imgen denoise holiday/ -o clean/ --device cuda:0", "Denoise every image of a folder into another folder, on the first GPU"),
    ("imgen lowlight + sr --scale 2 dark.jpg -o out.png", "Brighten, then upscale, in one process"),
    ("imgen lowlight - < dark.jpg | imgen sr --scale 2 - > out.png", "The same in a shell pipe"),
    ("imgen inpaint photo.jpg --mask mask.png -o clean.png", "Remove what a mask marks in white"),
    ("imgen restyle --style painting.jpg photo.jpg", "Paint a photo in the look of another image"),
    ("imgen sr --fit 1920x1080 photo.jpg -o wallpaper.png",
     "Upscale to fit a 1920x1080 screen (the smallest model scale that reaches it, then a resize)"),
    ("imgen denoise --blend 0.5 --width 800 noisy.jpg -o web.jpg",
     "Denoise only halfway, and make the result 800 pixels wide"),
    ("imgen sr --model RealESRGAN_x4plus.pth photo.jpg", "Run a community model file"),
    ("imgen lowlight -r photos/ -o bright/", "Brighten a folder and its subfolders into a mirrored tree"),
    ("imgen sr --scale 2 scans/ --dry-run", "See what would be written (input -> output, model), and stop"),
    ("imgen denoise scans/ -o clean/ --json > report.jsonl", "One JSON record per file, then a summary"),
    ("imgen plugins; imgen models --json", "List plugins and models"),
    ("imgen serve --preload denoise & imgen --server http://127.0.0.1:8800 denoise scans/ -o clean/",
     "Keep the models loaded in a server, and send it a folder's images"),
]


class ImgenUsage(click.UsageError):
    """A click usage error shown as imgen shows its own: `imgen: error: ...` and a hint line."""

    def show(self, file=None) -> None:
        click.echo(f"imgen: error: {self.format_message()}", file=file, err=True)
        if self.ctx is not None and self.ctx.command.get_help_option(self.ctx) is not None:
            click.echo(f"Try '{self.ctx.command_path} --help' for help.", file=file, err=True)


@contextlib.contextmanager
def _imgen_usage():
    """click's usage errors (bad options, values, commands) re-raised to show as imgen's."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as exc:
        if isinstance(exc, ImgenUsage):
            raise
        raise ImgenUsage(chain.click_message(exc), exc.ctx) from None


class ImgenGroup(WithExamples, click.Group):
    """Commands come from the plugin registry; `+` chains them (see `chain`)."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _imgen_usage():
            return super().make_context(info_name, args, parent, **extra)

    @property
    def registry(self) -> Registry:
        return get_registry()

    def list_commands(self, ctx):
        names = set(self.registry.commands) | set(self.registry.broken_commands)
        # After a `+` (completion only) the host commands, which cannot be chained, are not offered.
        host = [] if ctx.meta.get("imgen.after_chain") else list(HOST_COMMANDS)
        return host + sorted(names - set(HOST_COMMANDS))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        return chain.click_command(self.registry, name)

    def resolve_command(self, ctx, args):
        # Shell completion of a chain (`imgen denoise + sr --sc<TAB>`) completes the last step;
        # right after a `+` it offers command names. Running a chain goes through invoke instead.
        if ctx.resilient_parsing and chain.CHAIN in args:
            args = args[len(args) - args[::-1].index(chain.CHAIN):]
            if not args:
                ctx.meta["imgen.after_chain"] = True
                return None, None, []
        return super().resolve_command(ctx, args)

    def parse_args(self, ctx, args):
        # The group's own options only; every word after them stays in ctx.args (public) for
        # invoke and for shell completion, instead of click's private split of the first word.
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            raise click.exceptions.NoArgsIsHelpError(ctx)
        return click.Command.parse_args(self, ctx, args)

    def invoke(self, ctx):
        with _imgen_usage():
            return self._invoke(ctx)

    def _invoke(self, ctx):
        words, ctx.args = list(ctx.args), []
        if not words:
            ctx.fail("Missing command.")
        if words[0] in self.commands:  # a host command (`imgen plugins`): click's usual way
            with ctx:
                name, command, rest = self.resolve_command(ctx, words)
                ctx.invoked_subcommand = name
                click.Command.invoke(self, ctx)
                sub = command.make_context(name, rest, parent=ctx)
                with sub:
                    return sub.command.invoke(sub)
        contexts = chain.parse_contexts(words, self.registry, ctx, reserved=HOST_COMMANDS)
        ctx.exit(run_chain(ctx, contexts, server=ctx.params.get("server")))


def _protected_inputs(specs) -> list[str]:
    """Every file a chain reads besides its main inputs: extra image inputs and model files."""
    paths = []
    for spec in specs:
        for image_input, value in spec.inputs.values():
            if isinstance(value, str):
                resolved = value if os.path.exists(value) or image_input.resolve is None else image_input.resolve(value)
                paths.append(resolved or value)
        # A model given as a path (a name in the user model folder is looked up once, later).
        if spec.model and os.path.isfile(os.path.expanduser(spec.model)):
            paths.append(os.path.expanduser(spec.model))
    return paths


def run_chain(ctx: click.Context, contexts: list[click.Context], server: str | None = None) -> int:
    """Run the parsed chain over all inputs, here or on `server`; returns the exit status."""
    from . import batch

    root = ctx.params
    try:
        opts = chain.merge_shared(contexts)
    except UsageError as exc:
        click.echo(f"imgen: error: {exc}", err=True)
        return USAGE
    reporter = Reporter(quiet=opts["quiet"] or root.get("quiet", False),
                        verbose=opts["verbose"] or root.get("verbose", False),
                        debug=opts["debug"] or root.get("debug", False))
    settings = batch.Settings(output=opts["output"], format=opts["format"], quality=opts["quality"],
                              strip=opts["strip"], overwrite=opts["overwrite"],
                              skip_existing=opts["skip_existing"], max_pixels=opts["max_pixels"] or None)
    workers = opts["jobs"] or 1
    try:
        if settings.overwrite and settings.skip_existing:
            raise UsageError("--overwrite and --skip-existing contradict each other")
        if workers != 1 and workers != "auto" and server:
            raise UsageError("--jobs runs files at once on this machine; with --server the server schedules them")
        registry = get_registry()
        specs = chain.specs(contexts, registry)
        for spec in specs:
            spec.check_inputs({name: value is not None for name, (_, value) in spec.inputs.items()})
        models = _models(specs, registry, strict=not server)
        labels = [_label(model) for model in models]
        naming = batch.naming("-".join(sub.info_name for sub in contexts), _scale(specs, models),
                              "-".join(m for m in labels if m), suffix=opts["suffix"], template=opts["name_template"],
                              size=_size_tag(chain.output_size(specs)))
        found = batch.find_inputs(opts["inputs"], stdin_is_tty=_isatty(sys.stdin), recursive=opts["recursive"],
                                  naming=naming, output=settings.output)
        _tell_left_out(found, reporter)
        if not found.sources:
            # Only earlier outputs of this command: nothing to do, which a rerun may well find.
            reporter.say(f"nothing to do: the {len(found.own_outputs)} images found are named like outputs "
                         "of this command (-v lists them)")
            return 0
        jobs = batch.plan(found, settings, naming, stdout_is_tty=_isatty(sys.stdout))
        batch.refuse_collisions(jobs, found.sources + _protected_inputs(specs))
        if opts["as_json"] and any(job.output == batch.STDIO for job in jobs):
            raise UsageError("--json prints records on stdout, which carries the image here: "
                             "use --report FILE, or -o FILE")
        records = Records(opts["as_json"], opts["report"])
        if opts["dry_run"]:
            try:
                return _dry_run(jobs, settings, labels, records)
            finally:
                records.close()
        if server:
            workers = 1
        elif workers == "auto":
            workers = _auto_jobs(jobs, opts["device"])
        workers = min(workers, len(jobs))
        if server:
            from .client import Remote

            pipeline = Remote(server, contexts, specs)
            convert = pipeline.convert
        else:
            from .api import Pipeline

            threads = opts["threads"]
            if workers > 1 and not threads:
                # N files at once, each with its share of the cores: more threads than cores
                # only makes them wait for each other.
                threads = max(1, _cores() // workers)
            pipeline = Pipeline.from_specs(specs, device=opts["device"], precision=opts["precision"],
                                           tile=opts["tile"], threads=threads,
                                           max_pixels=settings.max_pixels, info=reporter.info,
                                           progress=reporter.progress if workers <= 1 else None, models=models)
            if workers > 1 and pipeline.engine.device.type != "cpu":
                reporter.info(f"--jobs {workers}: one file at a time on {pipeline.engine.device} (--jobs is for the CPU)")
                workers = 1
            elif workers > 1:
                reporter.info(f"{workers} files at once, {threads} torch threads each")
            convert = batch.convert
    except ImgenError as exc:
        reporter.error(exc)
        return exc.exit_code
    try:
        return batch.run(jobs, pipeline, settings, reporter, convert=convert, workers=workers, on_record=records.add)
    finally:
        records.close()


def _models(specs, registry, strict: bool) -> list:
    """The Model each step runs (None for a step without one), resolved once and loaded later.
    With --server an unknown name may be the server's own: left for the server to judge."""
    from .models import resolve_model

    models = []
    for spec in specs:
        try:
            models.append(resolve_model(registry, spec.command, spec.options, spec.model))
        except ImgenError:
            if strict:
                raise
            models.append(spec.model)  # the name as given
    return models


def _label(model) -> str | None:
    from .engine import model_label

    return model if model is None or isinstance(model, str) else model_label(model)


def _scale(specs, models: list) -> float:
    """The chain's size factor as the options and models tell it before any model loads (a
    user's model file counts as 1 until loaded): it names outputs (photo-sr-x4.jpg)."""
    factor = 1.0
    for spec, model in zip(specs, models):
        known = model.scale if model is not None and not isinstance(model, str) and not model.name.startswith("file:") else 1
        factor *= float(spec.options.get("outscale") or spec.options.get("scale") or known)
    return factor


def _size_tag(target) -> str:
    """A target size as default output names show it: 800x600 (--fit, or both sides), w800, h600."""
    if target is None:
        return ""
    if target.width and target.height:
        return f"{target.width}x{target.height}"
    return f"w{target.width}" if target.width else f"h{target.height}"


def _tell_left_out(found, reporter: Reporter) -> None:
    """Say once which subfolders a folder input left out, and with -v which files were left out
    as this command's own outputs."""
    if found.skipped_subfolders:
        count = len(found.skipped_subfolders)
        first = found.skipped_subfolders[0]
        more = f" and {count - 1} more" if count > 1 else ""
        reporter.say(f"left out subfolder {first}{more} (use -r to include subfolders)")
    for path in found.output_folders:
        reporter.info(f"{path}: left out, the output folder")
    for path in found.own_outputs:
        reporter.info(f"{path}: left out, named like an output of this command")


# --jobs auto: benchmarks/bench_jobs.py measured 2 files at once, each with half the threads,
# 1.71x as fast as one at a time with all of them (1.86x under heavier load; denoise, 40 JPEG
# crops of 400x300, 2 cores).
# Small images leave cores idle between and inside their few, short operations; big ones are
# tiled and keep the threads busy, and two of them in memory at once would double the peak.
AUTO_JOBS, AUTO_JOBS_MAX_PIXELS = 2, 4_000_000


def _auto_jobs(jobs, device: str) -> int:
    """--jobs auto: AUTO_JOBS on the CPU for several inputs of at most AUTO_JOBS_MAX_PIXELS (from
    their headers), else 1."""
    if len(jobs) < 2 or _cores() < 2 or str(device).lower() not in ("cpu", "auto"):
        return 1
    if str(device).lower() == "auto":
        import torch

        if torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            return 1
    import warnings

    from PIL import Image

    for job in jobs:
        try:
            # The header only; a huge one's bomb warning is for its own turn to give.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(job.source) as im:
                    if im.width * im.height > AUTO_JOBS_MAX_PIXELS:
                        return 1
        except Exception:  # unreadable here: its own turn reports why
            continue
    return AUTO_JOBS


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _dry_run(jobs, settings, models, records: "Records") -> int:
    """Print the plan: input -> output (models), and what exists; load, read and write nothing."""
    from . import batch

    about = {"model": "+".join(m for m in models if m) or None, "device": None, "precision": None}
    summary = batch.Summary()
    for job in jobs:
        try:
            skipped = batch.exists_skipped(job, settings)
        except ImgenError as exc:
            summary.failed += 1
            records.add(batch.record(job, batch.FAILED_STATUS, str(exc), about=about))
            note = f"  [{exc.message}]"
        else:
            summary.skipped += skipped
            records.add(batch.record(job, batch.SKIPPED if skipped else batch.PLANNED, about=about))
            note = "  [exists, skipped]" if skipped else ""
        if not records.to_stdout:
            click.echo(f"{job.source} -> {job.output}" + (f"  ({about['model']})" if about["model"] else "") + note)
    records.add({**batch.summary_record(summary, 0.0), "planned": len(jobs) - summary.skipped - summary.failed})
    return summary.exit_code


class Records:
    """--json records as JSON Lines on stdout, as they come; --report FILE gets them all at the end."""

    def __init__(self, to_stdout: bool, path: str | None):
        self.to_stdout, self.path = to_stdout, path
        self.lines: list[str] = []

    def add(self, record: dict) -> None:
        line = json.dumps(record)
        if self.to_stdout:
            click.echo(line)
            sys.stdout.flush()
        if self.path:
            self.lines.append(line)

    def close(self) -> None:
        if self.path:
            from .io import write_atomic

            try:
                write_atomic(self.path, "".join(line + "\n" for line in self.lines).encode(), overwrite=True)
            except ImgenError as exc:
                click.echo(f"imgen: error: {exc}", err=True)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@click.group(cls=ImgenGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             invoke_without_command=False, no_args_is_help=True, examples=EXAMPLES)
@click.version_option(__version__, "-V", "--version", prog_name="imgen")
@verbosity_options
@click.option("--server", metavar="URL", envvar="IMGEN_SERVER",
              help="Send each image to a running `imgen serve` instead of loading models here "
                   "(outputs are written as without it). Env: IMGEN_SERVER.")
def cli(quiet, verbose, debug, server):
    """Enhance images with generative models.

    Each command below comes from a plugin. Inputs are files, folders or - (stdin); outputs go
    beside the inputs, to -o FILE|FOLDER, or to stdout for stdin. Chain commands in one process
    with +:

        imgen denoise + sr --scale 2 photo.jpg -o photo-big.png
    """


@cli.command(cls=ExampleCommand, examples=[
    ("imgen plugins", "A table of the installed plugins and their state"),
    ("imgen plugins --json", "The same as JSON, for scripts"),
    ("imgen --debug plugins", "With the traceback of a plugin that failed to load"),
])
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins(ctx, as_json):
    """List installed plugins: version, where they load from, commands, models, problems.

    A plugin whose front module imports torch is flagged: it slows every imgen command, --help
    included. With imgen --debug, a broken plugin's traceback is shown too.
    """
    registry = get_registry()
    rows = []
    for info in sorted(registry.plugins.values(), key=lambda i: (not i.builtin, i.name)):
        rows.append({
            "name": info.name,
            "version": info.version,
            "distribution": info.distribution,
            "builtin": info.builtin,
            "location": info.location,
            "commands": info.commands,
            "models": info.models,
            "error": info.error,
            "imports_torch": info.imports_torch,
        })
        if info.error and info.traceback and ctx.find_root().params.get("debug"):
            click.echo(f"imgen: plugin {info.name!r}:\n{info.traceback}", err=True)
    _listing(rows, as_json, ("plugin", "version", "source", "commands", "models", "status", "location"),
             lambda row: (
                 row["name"], row["version"] or "-", "built-in" if row["builtin"] else "third-party",
                 ", ".join(row["commands"]) or "-", ", ".join(row["models"]) or "-", _status(row),
                 row["location"] or "-"))


def _status(row: dict) -> str:
    if row["error"]:
        return f"[red]error: {row['error']}[/red]"
    if row["imports_torch"]:
        return "[yellow]warning: imports torch when loaded (slows every command)[/yellow]"
    return "ok"


@cli.command(cls=ExampleCommand, context_settings={"ignore_unknown_options": True}, examples=[
    ("imgen install imgen-sharpen", "A plugin from PyPI"),
    ("imgen install --upgrade imgen-sharpen", "Upgrade it (pip's options are passed on)"),
    ("imgen install -e ./my-plugin", "A plugin being developed, editable"),
])
@click.argument("packages", nargs=-1, required=True, type=click.UNPROCESSED, metavar="PACKAGE...")
@click.pass_context
def install(ctx, packages):
    """Install plugins (and upgrade them) into imgen's own environment.

    Runs pip with the Python that runs imgen, so plugins land where imgen finds them even when
    imgen itself was installed with pipx or `uv tool install`; where that environment has no pip
    (uv makes none), `uv pip install --python` does it. Options are passed on:
    `imgen install --upgrade imgen-sharpen`, `imgen install -e ./my-plugin`.
    """
    ctx.exit(_pip("install", list(packages)))


@cli.command(cls=ExampleCommand, context_settings={"ignore_unknown_options": True}, examples=[
    ("imgen uninstall imgen-sharpen", "Remove a plugin"),
])
@click.argument("packages", nargs=-1, required=True, type=click.UNPROCESSED, metavar="PACKAGE...")
@click.pass_context
def uninstall(ctx, packages):
    """Uninstall plugins from imgen's own environment (without asking).

    The counterpart of `imgen install`: pip of the Python that runs imgen, or `uv pip uninstall`.
    """
    ctx.exit(_pip("uninstall", list(packages)))


def _pip(action: str, words: list[str]) -> int:
    """Run the installer; its output goes straight to the terminal, its status is ours."""
    import subprocess

    try:
        command = installer(action)
    except UsageError as exc:
        click.echo(f"imgen: error: {exc}", err=True)
        return exc.exit_code
    return subprocess.run(command + words).returncode


def installer(action: str) -> list[str]:
    """The command that installs into (or uninstalls from) the environment imgen runs in."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", action] + (["--yes"] if action == "uninstall" else [])
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "pip", action, "--python", sys.executable]
    raise UsageError(f"imgen's environment ({sys.prefix}) has neither pip nor uv on PATH to {action} with")


@cli.command(cls=ExampleCommand, examples=[
    ("imgen models", "Every registered model and the user model folder's files"),
    ("imgen models --json", "The same as JSON, for scripts"),
    ("imgen sr --model sr-fidelity-x2 scan.png", "Run one of them"),
])
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def models(as_json):
    """List the models each command can run (--model NAME)."""
    from .models import user_model_dir, user_model_files

    registry = get_registry()
    rows = []
    for model in sorted(registry.models.values(), key=lambda m: (m.command, m.name)):
        size = os.path.getsize(model.weights) if model.weights and os.path.exists(model.weights) else None
        rows.append({"name": model.name, "command": model.command, "scale": model.scale, "default": model.default,
                     "precisions": list(model.precisions), "weights": model.weights, "bytes": size,
                     "description": model.description, "source": registry.model_owner(model.name)})
    for path in user_model_files():
        rows.append({"name": path.stem, "command": None, "scale": None, "default": False, "precisions": [],
                     "weights": str(path), "bytes": path.stat().st_size,
                     "description": f"user model in {user_model_dir()} (use with --model {path.stem})",
                     "source": "user"})
    _listing(rows, as_json, ("model", "command", "scale", "default", "size", "description"), lambda row: (
        row["name"], row["command"] or "any", f"x{row['scale']}" if row["scale"] else "?",
        "yes" if row["default"] else "", f"{row['bytes'] / 1e6:.1f} MB" if row["bytes"] else "-",
        row["description"]))


cli.add_command(metrics)
cli.add_command(serve)
# `imgen ray`: the chain over a Ray cluster (its own module; Ray is imported only when it runs).
cli.add_command(ray_command)


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
    """Console entry point: click's parsing, our exits for Ctrl-C, stop signals and closed pipes."""
    _stop_signals_interrupt()
    try:
        code = cli.main(args=argv, prog_name="imgen", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        click.echo("imgen: interrupted", err=True)
        # click turns an interrupt during parsing into Abort; the signal is its cause.
        sys.exit(getattr(exc.__cause__ or exc, "exit_code", INTERRUPTED))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        silence_stdout()
        sys.exit(BROKEN_PIPE)
    sys.exit(code if isinstance(code, int) else 0)


def _stop_signals_interrupt() -> None:
    """SIGTERM, SIGHUP and SIGQUIT unwind like Ctrl-C (temporary files removed), exit 128 + N."""
    import signal

    def stop(signum, frame):
        raise Interrupted(signum)

    for name in ("SIGTERM", "SIGHUP", "SIGQUIT"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
