"""Run an imgen chain over many files on a Ray cluster: `imgen ray` and its Python API.

    from imgen_cli import scaleout

    results = scaleout.run("denoise + sr --scale 2", ["photos/"], "big/", actors=4, gpus_per_actor=0.5)
    failed = [r for r in results if r.status == "failed"]

Ray Data reads every file's raw bytes (`read_binary_files`); a pool of actors, each holding one
`Pipeline` (so models load once per actor), decodes, runs and encodes every file with imgen's own
I/O, one image at a time (images of different sizes never share a tensor batch), and writes it
atomically under the output folder, mirroring the input tree. The dataset carries a small result
row per file back to the driver (input, output, status, error, seconds), never pixels.

An existing output is skipped (without being read) unless `overwrite`, so a killed job is
resumed by running it again. A bad file is a row with status "failed"; a chain that cannot run at
all (a plugin or model that fails to load, a device that is not there) fails the job, as it would
fail every file.

Ray is an optional extra (`pip install 'imgen[ray]'`); this module imports it only when a job runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import click

from . import batch
from . import io as imageio_
from .errors import FAILED, OK, PLUGIN, USAGE, ImgenError, PluginError, UsageError
from .options import ExampleCommand

WRITTEN, SKIPPED, FAILED_STATUS = "written", "skipped", "failed"
COLUMNS = ("input", "output", "status", "error", "seconds")
# An extra column of the actors' rows: 0, or the exit status of an error that ends the job.
STOP = "stop"


@dataclass(frozen=True)
class Result:
    """What happened to one input file (paths are absolute)."""

    input: str
    output: str
    status: str  # written, skipped or failed
    error: str  # the reason when failed, else ""
    seconds: float  # decode + run + encode + write, in the actor


@dataclass(frozen=True)
class Tree:
    """An input folder (or a single file's folder) and the output folder that mirrors it."""

    source: str  # absolute
    dest: str  # absolute


@dataclass(frozen=True)
class Settings:
    """Everything an actor needs besides the files: the chain and the CLI's engine and I/O options."""

    chain: tuple[str, ...]
    trees: tuple[Tree, ...]
    output: batch.Settings
    device: str = "auto"
    precision: str = "auto"
    tile: str | int = "auto"
    threads: int | None = None
    cwd: str | None = None  # the driver's folder, which relative paths in the chain refer to


# -- imgen's own chain parser, Pipeline and per-file logic ----------------------------------------


def _parse_chain(words: list[str], parent: click.Context | None):
    """(click contexts, merged shared options) of a chain, checked as the CLI checks it."""
    from . import chain
    from .cli import HOST_COMMANDS
    from .plugins import get_registry

    registry = get_registry()
    contexts = chain.parse_contexts(words, registry, parent, reserved=HOST_COMMANDS)
    opts = chain.merge_shared(contexts)
    for spec in chain.specs(contexts, registry):
        spec.check_inputs({name: value is not None for name, (_, value) in spec.inputs.items()})
    return contexts, opts


def _pipeline(settings: Settings):
    from .api import Pipeline

    return Pipeline(list(settings.chain), device=settings.device, precision=settings.precision,
                    tile=settings.tile, threads=settings.threads, max_pixels=settings.output.max_pixels)


# -- planning (on the driver) -----------------------------------------------------------------------


def find_files(inputs: list[str] | tuple[str, ...], output: str) -> tuple[list[str], tuple[Tree, ...]]:
    """Input images (absolute paths, sorted, each once) and the trees their outputs mirror.

    A folder is searched recursively for the images the CLI reads (by extension, hidden files and
    folders skipped) and mirrored into `output`; a file goes directly into `output`.
    """
    if not inputs:
        raise UsageError("no input: give image files or folders")
    if not output or output == batch.STDIO:
        raise UsageError("imgen ray writes into a folder: give -o FOLDER")
    dest = os.path.abspath(output)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UsageError(f"-o {output}: not a folder")
    readable = (*imageio_.EXTENSIONS, ".gif")
    files: dict[str, None] = {}
    trees: dict[str, Tree] = {}
    for item in inputs:
        if item == batch.STDIO:
            raise UsageError("imgen ray reads files and folders, not stdin")
        path = os.path.abspath(item)
        if os.path.isdir(path):
            if _inside(dest, path):
                raise UsageError(f"-o {output} is inside the input folder {item}: a rerun would read its outputs")
            found = []
            for folder, subfolders, names in os.walk(path):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                found += [os.path.join(folder, name) for name in names
                          if not name.startswith(".") and os.path.splitext(name)[1].lower() in readable]
            if not found:
                raise UsageError(f"{item}: folder has no images")
            trees[path] = Tree(path, dest)
            files.update(dict.fromkeys(sorted(found)))
        elif os.path.isfile(path):
            trees.setdefault(os.path.dirname(path), Tree(os.path.dirname(path), dest))
            files[path] = None
        else:
            raise UsageError(f"{item}: no such file or folder")
    return list(files), tuple(sorted(trees.values(), key=lambda t: len(t.source), reverse=True))


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def output_folder(source: str, trees: tuple[Tree, ...]) -> str:
    """The folder an input's output goes to: its tree's output folder plus its path below the tree
    (the deepest tree holding it, so driver and actors agree)."""
    for tree in trees:
        if _inside(source, tree.source):
            below = os.path.relpath(os.path.dirname(source), tree.source)
            return os.path.normpath(os.path.join(tree.dest, below))
    raise ImgenError("not below any input folder", source)


def plan(files: list[str], trees: tuple[Tree, ...], settings: batch.Settings) -> tuple[list[str], list[Result]]:
    """Files still to do, and a "skipped" row for each whose output exists (unless overwriting).

    The output name is settled from the file name here, before reading; an actor settles it again
    from the bytes and skips there too, so a file whose name lies about its format is still right.
    """
    todo, skipped, outputs = [], [], {}
    for source in files:
        output, _ = batch.choose_output(source, None, settings, None, output_folder(source, trees))
        if output in outputs:
            raise UsageError(f"{source} and {outputs[output]} would both be written to {output}")
        outputs[output] = source
        if os.path.exists(output) and not settings.overwrite:
            skipped.append(Result(source, output, SKIPPED, "", 0.0))
        else:
            todo.append(source)
    return todo, skipped


# -- the actor --------------------------------------------------------------------------------------


class ChainActor:
    """Ray Data callable class: builds the Pipeline once per actor, then converts batches of files.

    A batch is Ray Data's numpy format of `read_binary_files(include_paths=True)` ("bytes",
    "path"); the result has one row per file with the COLUMNS.
    """

    def __init__(self, settings: Settings):
        if settings.cwd and os.path.isdir(settings.cwd):
            os.chdir(settings.cwd)  # relative paths in the chain (--model FILE, --mask DIR)
        self.settings = settings
        self.pipeline = None

    def __call__(self, rows: dict) -> dict:
        import numpy as np

        stop = 0
        try:
            if self.pipeline is None:
                # Built here rather than in __init__, so that its errors become rows too: Ray
                # hands the driver an error raised in an actor's constructor as text only.
                self.pipeline = _pipeline(self.settings)
            results = [self.convert(bytes(data), str(path)) for data, path in zip(rows["bytes"], rows["path"])]
        except ImgenError as exc:
            # The chain cannot run at all (a model that does not load, a device that is not
            # there): every file would fail the same way, so the rows ask the driver to stop.
            stop = exc.exit_code
            results = [Result(str(path), "", FAILED_STATUS, exc.message, 0.0) for path in rows["path"]]
        columns = {name: np.array([getattr(r, name) for r in results], dtype=np.float64 if name == "seconds" else object)
                   for name in COLUMNS}
        columns[STOP] = np.full(len(results), stop)
        return columns

    def convert(self, data: bytes, source: str) -> Result:
        started = time.perf_counter()
        output = ""
        io = self.settings.output
        try:
            output, fmt = batch.choose_output(source, data[:batch.HEAD], io, None,
                                               output_folder(source, self.settings.trees))
            if os.path.exists(output) and not io.overwrite:
                return Result(source, output, SKIPPED, "", time.perf_counter() - started)
            done = batch.convert(self.pipeline, data, source, fmt, io)
            try:
                batch.write_output(output, done.data, io.overwrite)
            except ImgenError:
                # Another actor (or a job still draining after a kill) wrote it meanwhile.
                if os.path.exists(output) and not io.overwrite:
                    return Result(source, output, SKIPPED, "", time.perf_counter() - started)
                raise
        except ImgenError as exc:
            if isinstance(exc, PluginError) or exc.exit_code == USAGE:
                raise  # the chain cannot run at all: every file would fail the same way
            return Result(source, output, FAILED_STATUS, exc.message, time.perf_counter() - started)
        except Exception as exc:  # a plugin bug on this image: a row, as the CLI makes it one line
            return Result(source, output, FAILED_STATUS, f"internal error: {type(exc).__name__}: {exc}",
                          time.perf_counter() - started)
        return Result(source, output, WRITTEN, "", time.perf_counter() - started)


# -- the job ----------------------------------------------------------------------------------------


def dataset(files: list[str], settings: Settings, *, actors: int = 1, cpus_per_actor: float = 1.0,
            gpus_per_actor: float = 0.0, batch_size: int = 4):
    """The Ray Dataset of result rows for `files` (lazy: iterating it runs the job)."""
    import ray.data

    # Reading is I/O, not compute: read tasks reserve no CPU, or an actor pool holding every CPU
    # of a small cluster would leave them unschedulable.
    files_ds = ray.data.read_binary_files(files, include_paths=True, num_cpus=0)
    return files_ds.map_batches(
        ChainActor, fn_constructor_args=(settings,), batch_size=batch_size, batch_format="numpy",
        # Few batches queued per actor, so the last ones spread over the pool instead of waiting
        # behind one busy actor.
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
        num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)


def run(chain: str | list[str], inputs: list[str], output: str, *, overwrite: bool = False,
        format: str | None = None, quality: int | None = None, strip: bool = False,
        max_pixels: int | None = imageio_.DEFAULT_MAX_PIXELS, device: str = "auto", precision: str = "auto",
        tile: str | int = "auto", threads: int | None = None, actors: int = 1, cpus_per_actor: float = 1.0,
        gpus_per_actor: float = 0.0, batch_size: int = 4, on_result=None) -> list[Result]:
    """Run `chain` over the images in `inputs` (files, folders) into the folder `output`.

    Connects to Ray as `ray.init()` does when it is not initialised yet. `threads` defaults to the
    CPUs each actor reserves. `on_result(result)` is called on the driver for each row as it
    arrives. Returns every row, sorted by input; raises ImgenError when the job cannot run.
    """
    import shlex

    words = shlex.split(chain) if isinstance(chain, str) else list(chain)
    try:
        _parse_chain(words, None)
    except click.ClickException as exc:
        from .chain import click_message

        raise UsageError(click_message(exc)) from None
    io = batch.Settings(output=output, format=format, quality=quality, strip=strip, overwrite=overwrite,
                        max_pixels=max_pixels or None)
    files, settings = prepare(words, inputs, io, device=device, precision=precision, tile=tile,
                              threads=threads or max(1, round(cpus_per_actor)))
    return execute(files, settings, actors=actors, cpus_per_actor=cpus_per_actor, gpus_per_actor=gpus_per_actor,
                   batch_size=batch_size, on_result=on_result)


def prepare(words: list[str], inputs, io: batch.Settings, **engine) -> tuple[list[str], Settings]:
    """The input files and the actors' Settings for a checked chain."""
    files, trees = find_files(inputs, io.output)
    return files, Settings(tuple(words), trees, io, cwd=os.getcwd(), **engine)


def execute(files: list[str], settings: Settings, *, on_result=None, **pool) -> list[Result]:
    """Plan, skip what exists, and run the rest (see `run`)."""
    todo, results = plan(files, settings.trees, settings.output)
    for result in results:
        if on_result:
            on_result(result)
    if not todo:
        return sorted(results, key=lambda r: r.input)
    rows = iter(dataset(todo, settings, **pool).iter_rows())
    try:
        while True:
            try:
                row = next(rows, None)
            except Exception as exc:  # Ray's own failure (a node lost for good, a worker that crashed)
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ImgenError(f"Ray job failed: {type(exc).__name__}: {first}") from exc
            if row is None:
                return sorted(results, key=lambda r: r.input)
            if row[STOP]:
                raise {USAGE: UsageError, PLUGIN: PluginError}.get(int(row[STOP]), ImgenError)(row["error"])
            result = Result(*(row[name] for name in COLUMNS))
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        rows.close()  # stops the job's execution when it ends early


def write_table(results: list[Result], path: str) -> None:
    """The result table as CSV, written atomically."""
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for r in results:
        writer.writerow([r.input, r.output, r.status, r.error, f"{r.seconds:.3f}"])
    imageio_.write_atomic(path, text.getvalue().encode(), overwrite=True)


# -- the command ------------------------------------------------------------------------------------

RAY_OPTIONS = ("address", "actors", "cpus_per_actor", "gpus_per_actor", "batch_size", "results")


@click.command("ray", cls=ExampleCommand, examples=[
    ("imgen ray denoise + sr --scale 2 photos/ -o big/ --actors 4", "A chain over a folder, four actors on this machine"),
    ("imgen ray sr --scale 4 /nfs/in/ -o /nfs/out/ --address auto --gpus-per-actor 0.5 --actors 8",
     "On the cluster `ray start` made, two actors per GPU"),
    ("imgen ray sr photos/ -o big/ --results results.csv", "Run again to resume; a CSV of every file's result"),
], context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                        "help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--address", metavar="auto|HOST:PORT|ray://HOST:PORT",
              help="Ray cluster to run on: auto finds the one `ray start` made on this machine. "
                   "Default: $RAY_ADDRESS, else a Ray instance started on this machine for this run.")
@click.option("--actors", type=click.IntRange(1), default=1, show_default=True,
              help="Actors running the chain, each with its own copy of the models.")
@click.option("--cpus-per-actor", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="CPUs each actor reserves (also its torch threads unless --threads).")
@click.option("--gpus-per-actor", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs each actor reserves; a fraction (0.25) packs several actors on one GPU.")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True,
              help="Files handed to an actor at a time (each image still runs on its own).")
@click.option("--results", "results_path", metavar="FILE",
              help="Write the result table (input, output, status, error, seconds) to this CSV file.")
@click.argument("words", nargs=-1, type=click.UNPROCESSED, metavar="COMMAND [OPTIONS] [+ COMMAND [OPTIONS]]... INPUT... -o FOLDER")
@click.pass_context
def ray_command(ctx, address, actors, cpus_per_actor, gpus_per_actor, batch_size, results_path, words):
    """Run a command or chain over files and folders on a Ray cluster.

    Needs the ray extra (pip install 'imgen[ray]'). Every image below the input folders is
    processed by a pool of actors, each loading the models once, and written into -o FOLDER under
    the same relative path. Outputs that exist are skipped, so running the same command again
    resumes a job that was stopped (--overwrite redoes them). Errors are reported per file; the
    exit status is 1 when any file failed.

    The options below may stand anywhere on the line; the chain takes the options of its
    commands and the shared ones (--format, --quality, --strip, --overwrite, --device, --precision,
    --tile, --threads, --max-pixels, -q, -v, --debug).
    """
    from .report import Reporter

    root = ctx.find_root().params
    try:
        contexts, opts = _parse_chain(list(words), ctx)
    except ImgenError as exc:
        click.echo(f"imgen: error: {exc}", err=True)
        ctx.exit(exc.exit_code)
    reporter = Reporter(quiet=opts["quiet"] or root.get("quiet", False),
                        verbose=opts["verbose"] or root.get("verbose", False),
                        debug=opts["debug"] or root.get("debug", False))
    ctx.exit(_command(reporter, contexts, opts, address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                      gpus_per_actor=gpus_per_actor, batch_size=batch_size, results_path=results_path,
                      words=list(words)))


def _command(reporter, contexts, opts, *, address, actors, cpus_per_actor, gpus_per_actor, batch_size,
             results_path, words) -> int:
    from .errors import INTERRUPTED

    # imgen ray's options are taken wherever they stand, so a step's option of the same name
    # would silently lose its value.
    clash = sorted({p.name for sub in contexts for p in sub.command.params} & set(RAY_OPTIONS))
    try:
        if clash:
            raise UsageError(f"--{clash[0].replace('_', '-')} is an option of both imgen ray and the chain")
        if opts["overwrite"] and opts["skip_existing"]:
            raise UsageError("--overwrite and --skip-existing contradict each other")
        # The CLI's batch options that a Ray job does its own way (it always walks subfolders).
        for name, instead in (("suffix", "outputs keep their input's name under -o FOLDER"),
                              ("name_template", "outputs keep their input's name under -o FOLDER"),
                              ("dry_run", ""), ("as_json", "use --results FILE"), ("report", "use --results FILE"),
                              ("jobs", "use --actors N")):
            if opts.get(name) and not (name == "jobs" and opts[name] in (1, "auto")):
                flag = {"name_template": "name", "as_json": "json"}.get(name, name).replace("_", "-")
                raise UsageError(f"imgen ray does not take --{flag}" + (f": {instead}" if instead else ""))
        io = batch.Settings(output=opts["output"], format=opts["format"], quality=opts["quality"],
                            strip=opts["strip"], overwrite=opts["overwrite"], max_pixels=opts["max_pixels"] or None)
        files, settings = prepare(words, opts["inputs"], io, device=opts["device"], precision=opts["precision"],
                                  tile=opts["tile"], threads=opts["threads"] or max(1, round(cpus_per_actor)))
    except ImgenError as exc:
        reporter.error(exc)
        return exc.exit_code
    summary = batch.Summary()
    started = time.perf_counter()
    with _native_stderr_hidden(not reporter.debug):
        bar = reporter.progress(total=len(files), desc="images", unit="img")

        def report(result: Result) -> None:
            if result.status == FAILED_STATUS:
                summary.failed += 1
                reporter.error(ImgenError(result.error, _shown(result.input)))
            elif result.status == SKIPPED:
                summary.skipped += 1
                reporter.info(f"{_shown(result.output)}: exists, skipped")
            else:
                summary.written += 1
                reporter.info(f"wrote {_shown(result.output)} ({result.seconds:.2f} s)")
            bar.update(1)

        connected = False
        try:
            connected = _connect(address, verbose=reporter.debug)
            results = execute(files, settings, on_result=report, actors=actors, cpus_per_actor=cpus_per_actor,
                              gpus_per_actor=gpus_per_actor, batch_size=batch_size)
            if results_path:
                write_table(results, results_path)
        except KeyboardInterrupt:
            click.echo("imgen: interrupted", err=True)
            return INTERRUPTED
        except ImgenError as exc:
            reporter.error(exc)
            return exc.exit_code if exc.exit_code != OK else FAILED
        finally:
            bar.close()
            if connected:
                import ray

                ray.shutdown()
    seconds = time.perf_counter() - started
    done = summary.written + summary.failed
    reporter.say(f"{summary.line()} in {seconds:.1f} s" + (f" ({done / seconds:.2f} img/s)" if done else ""))
    return summary.exit_code


def _shown(path: str) -> str:
    """A path as messages show it: relative to the current folder when below it."""
    relative = os.path.relpath(path) if path else path
    return relative if path and not relative.startswith(os.pardir) else path


def _connect(address: str | None, verbose: bool) -> bool:
    """Join the cluster at `address` ($RAY_ADDRESS when None), or start a local instance; True
    when this call connected (and so should disconnect)."""
    import logging

    try:
        import ray
    except ImportError:
        raise UsageError("imgen ray needs Ray: pip install 'imgen[ray]'") from None
    import ray.data

    if ray.is_initialized():
        return False
    where = address or os.environ.get("RAY_ADDRESS")
    try:
        # "local" always starts a new instance: ray.init() without an address would follow the
        # current-cluster file of /tmp/ray, which a killed instance leaves behind, and hang there.
        ray.init(address=where or "local", include_dashboard=None if where else False,
                 logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose)
    except Exception as exc:  # unreachable address, refused token, bad scheme, version mismatch
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ImgenError(f"cannot connect to Ray at {where or 'a new local instance'}: {reason}") from None
    # imgen draws its own progress bar and prints its own messages.
    ray.data.DataContext.get_current().enable_progress_bars = False
    if not verbose:
        # Ray Data logs a failed job with its full stack; imgen says what went wrong in one line.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    return True


@contextlib.contextmanager
def _native_stderr_hidden(hidden: bool):
    """Ray's C++ core writes its own log lines to file descriptor 2 (a note about Ray Data's actor
    constructor arguments on every run, a line a second while a connection is refused): point
    that descriptor at /dev/null while sys.stderr, which imgen's messages and progress bar use,
    keeps writing where stderr went. Ray's own logs stay in its session folder."""
    if not hidden:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    original = sys.stderr
    sys.stderr = open(saved, "w", buffering=1, encoding=original.encoding, errors=original.errors, closefd=False)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)
