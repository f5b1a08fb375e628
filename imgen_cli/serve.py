"""`imgen serve`: imgen's commands and chains as an HTTP service whose models stay loaded.

    imgen serve --preload denoise --workers 1 --max-queue 8
    curl --data-binary @in.png 'http://127.0.0.1:8800/v1/enhance?chain=denoise' -o out.png

A request goes through the CLI's own chain parser, engine (`api.Pipeline`) and image I/O, so the
bytes that come back are the bytes `imgen CHAIN in -o out` writes. See docs/serve.md for the
HTTP interface; this module is the server, imgen_cli/client.py the `imgen --server URL` side.

How work is bounded. N worker threads each own their engine (models are not assumed to be
thread-safe, so no model is ever called from two threads) and a cache of pipelines by chain; the
engine's model cache is shared by a worker's pipelines, so `denoise --sigma 10` and `--sigma 20`
load the network once. A request is admitted only while fewer than N + Q are admitted (running,
queued, or still uploading); beyond that it gets 503 with Retry-After at once, before its body
is read. Uploads are counted while they stream, so a missing or lying Content-Length cannot get
more than --max-upload through.

Shutdown. The first SIGTERM (or Ctrl-C) starts draining: /readyz and new requests answer 503 while
admitted requests finish; once none is left (or --timeout has passed) the server exits 0. A
second Ctrl-C exits at once.

Only the standard library and click are imported at module level: `imgen --help` lists this
command without importing Starlette, uvicorn or torch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import queue
import shlex
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, replace

import click

from .errors import FAILED, OK, PLUGIN, USAGE, DeviceError, ImgenError, PluginError, UsageError
from .options import ExampleCommand
from .report import Reporter

MB = 1 << 20
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "tiff": "image/tiff",
                 "bmp": "image/bmp"}
IMAGE_PART = "image"  # the multipart part holding the main image
PIPELINES_PER_WORKER = 32  # chains kept parsed per worker (models are shared, so these are small)
# Shared options that belong to the server (set on `imgen serve`) or to files, not to a request.
SERVER_OPTIONS = ("device", "precision", "tile", "threads", "max_pixels")
# Options about files and runs of the CLI, which a request (one image in its body) has no use for.
FILE_OPTIONS = ("inputs", "output", "overwrite", "skip_existing", "recursive", "suffix", "name_template",
                "dry_run", "as_json", "report", "jobs")


# -- the command ---------------------------------------------------------------------------------


@click.command("serve", cls=ExampleCommand, examples=[
    ("imgen serve --preload denoise", "Serve on 127.0.0.1:8800 with the denoise model loaded at start"),
    ("curl --data-binary @in.png 'http://127.0.0.1:8800/v1/enhance?chain=denoise' -o out.png",
     "Send it an image"),
    ("imgen --server http://127.0.0.1:8800 denoise *.png", "The command line, with the pixels made by the server"),
    ("imgen serve --host 0.0.0.0 --port 9000 --workers 2 --device cuda", "On the network, two images at a time on the GPU"),
], context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default answers this machine only; 0.0.0.0 opens it to the "
                   "network (there is no authentication: put a proxy in front).")
@click.option("--port", type=click.IntRange(0, 65535), default=8800, show_default=True,
              help="TCP port; 0 picks a free one (the startup line names it).")
@click.option("--preload", "preload", multiple=True, metavar="CHAIN",
              help="A chain to load before /readyz answers 200, e.g. 'denoise + sr --scale 2' (repeatable).")
@click.option("--workers", type=click.IntRange(1, 64),
              help="Images processed at once, each worker with its own copy of the models. "
                   "Default: one per GPU, else 1.")
@click.option("--max-queue", type=click.IntRange(0), default=8, show_default=True,
              help="Requests waiting for a worker; more get 503 with Retry-After.")
@click.option("--max-upload", type=click.FloatRange(0, min_open=True), default=100.0, show_default=True,
              metavar="MB", help="Largest request body in megabytes (413 above it).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=300.0, show_default=True,
              metavar="SECONDS", help="Longest a request may take, upload and queue included (504 after it).")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda|cuda:N|mps",
              help="Where the workers run; auto spreads them over the GPUs.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto",
              show_default=True, help="As for every command.")
@click.option("--tile", default="auto", show_default=True, metavar="auto|PIXELS|0", help="As for every command.")
@click.option("--threads", type=click.IntRange(1, 1024), help="CPU threads for torch.")
@click.option("--max-pixels", type=click.IntRange(0), default=200_000_000, show_default=True,
              help="Refuse larger images (decompression bombs), uploads and extra inputs alike; 0 for no limit.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="Log every request on stderr.")
@click.option("--debug", is_flag=True, help="Tracebacks for internal errors.")
def serve(host, port, preload, workers, max_queue, max_upload, timeout, device, precision, tile, threads,
          max_pixels, quiet, verbose, debug):
    """Serve the commands over HTTP, models loaded once.

    POST an image to /v1/enhance?chain=CHAIN and get the enhanced image back, made by the same
    parser, engine and image I/O as the command line. Extra inputs (--mask, --style) are
    multipart parts named like the options, the main image the part named image.

    Also: GET /healthz, /readyz, /v1/commands, /v1/models. Details: docs/serve.md.
    """
    log = Log(quiet=quiet, verbose=verbose, debug=debug)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        log.error(f"imgen serve needs the serve extra: pip install 'imgen[serve]' ({exc})")
        sys.exit(PLUGIN)
    try:
        service = Service(preload=preload, workers=workers, max_queue=max_queue, max_upload=int(max_upload * MB),
                          timeout=timeout, device=device, precision=precision, tile=tile, threads=threads,
                          max_pixels=max_pixels or None, log=log)
    except ImgenError as exc:
        log.error(str(exc))
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a --preload chain that does not parse
        from .chain import click_message

        log.error(f"--preload: {click_message(exc)}")
        sys.exit(USAGE)
    sys.exit(run_server(service, host, port))


class Log(Reporter):
    """The server's messages on stderr, one line each: the CLI's Reporter without progress bars,
    its lines kept whole across worker threads."""

    def __init__(self, quiet=False, verbose=False, debug=False):
        super().__init__(quiet, verbose, debug)
        self.interactive = self.plain = False
        self._lock = threading.Lock()

    def error(self, message: str, exc: BaseException | None = None) -> None:
        self._write(f"imgen: error: {message}")
        if self.debug and exc is not None:
            with self._lock:
                traceback.print_exception(exc, file=sys.stderr)

    def _write(self, line: str) -> None:
        with self._lock:
            print(line, file=sys.stderr, flush=True)


# -- requests: parsing, the job, the answer ---------------------------------------------------------


class RequestError(Exception):
    """A request refused with an HTTP status; `kind` tells the client which exit status it maps to."""

    def __init__(self, status: int, message: str, kind: str, part: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.part, self.retry_after = status, message, kind, part, retry_after


def error_for(exc: ImgenError, part: str | None = None) -> RequestError:
    """The HTTP answer to an imgen error: the CLI's one-line reason, with a status that says whose fault."""
    if isinstance(exc, (UsageError, DeviceError)):
        return RequestError(400, exc.message, "usage", part)
    if isinstance(exc, PluginError):
        return RequestError(500, exc.message, "plugin", part)
    # Input errors and failures on this image (size mismatch, out of memory) are about the request.
    return RequestError(422, exc.message, "input", part)


@dataclass
class Chain:
    """A parsed request chain: its steps (chain.StepSpec) and how to answer."""

    key: str
    specs: list
    names: dict  # image input name -> ImageInput spec, over the whole chain
    given: dict  # image input name -> value written in the chain (a built-in name, e.g. a style)
    format: str | None = None
    quality: int | None = None
    strip: bool = False


def parse_request_chain(text: str, fmt: str | None = None, quality: str | None = None,
                        strip: str | None = None) -> Chain:
    """A chain from a request, through the CLI's own parser; raises RequestError(400).

    Inputs, outputs and engine settings are not a request's to choose: a chain naming them is
    refused rather than half obeyed.
    """
    from . import chain as chain_
    from . import io as imgio
    from .cli import HOST_COMMANDS
    from .plugins import get_registry

    registry = get_registry()
    try:
        words = shlex.split(text or "")
    except ValueError as exc:
        raise RequestError(400, f"chain: {exc}", "usage") from None
    if not words:
        raise RequestError(400, "no chain: add ?chain=COMMAND (see GET /v1/commands)", "usage")
    if "-h" in words or "--help" in words:
        raise RequestError(400, "no --help here: GET /v1/commands describes every command", "usage")
    try:
        contexts = chain_.parse_contexts(words, registry, reserved=HOST_COMMANDS)
        for sub in contexts:
            for name in (*FILE_OPTIONS, *SERVER_OPTIONS):
                source = sub.get_parameter_source(name)
                if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
                    continue
                flag = "inputs" if name == "inputs" else next(
                    max(p.opts, key=len) for p in sub.command.params if p.name == name)
                reason = ("is set when the server starts (imgen serve " + flag + ")" if name in SERVER_OPTIONS
                          else "has no place in a request: the image is the request body")
                raise RequestError(400, f"{flag} {reason}", "usage")
        shared = chain_.merge_shared(contexts)
        specs = chain_.specs(contexts, registry)
    except click.exceptions.Exit:
        raise RequestError(400, "no --help here: GET /v1/commands describes every command", "usage") from None
    except click.ClickException as exc:
        raise RequestError(400, chain_.click_message(exc), "usage") from None
    except ImgenError as exc:
        raise error_for(exc) from None
    for spec in specs:
        # Registered models only: a path (or the user model folder) would load the server's files.
        if spec.model is not None and spec.model not in registry.models:
            raise RequestError(400, f"--model {spec.model}: no such model on this server (see GET /v1/models)",
                               "usage")
    key = repr([(spec.command.name, spec.model, sorted(spec.options.items(), key=lambda kv: kv[0]), spec.blend,
                 spec.size) for spec in specs])
    names, given = {}, {}
    for spec in specs:
        for name, (image_input, value) in spec.inputs.items():
            names[name] = image_input
            if value is not None:
                given[name] = value
    for name, value in given.items():
        # A value in the chain may only be a name the plugin resolves (a built-in style): a path
        # would read the server's files.
        if names[name].resolve is None or not names[name].resolve(value):
            raise RequestError(400, f"--{name} {value}: send the image as a multipart part named {name!r}",
                               "usage", name)
    chain = Chain(key, specs, names, given, strip=bool(shared.get("strip")))
    try:
        chain.format = imgio.check_format(fmt) if fmt else shared.get("format") and imgio.check_format(shared["format"])
    except ImgenError as exc:
        raise error_for(exc) from None
    chain.quality = shared.get("quality")
    if quality is not None:
        if not quality.isdigit() or not 1 <= int(quality) <= 100:
            raise RequestError(400, f"quality must be a whole number from 1 to 100, not {quality!r}", "usage")
        chain.quality = int(quality)
    if strip is not None:
        if strip.lower() not in ("1", "0", "true", "false", "yes", "no", ""):
            raise RequestError(400, f"strip must be 1 or 0, not {strip!r}", "usage")
        chain.strip = strip.lower() in ("1", "true", "yes", "")
    return chain


@dataclass
class Job:
    chain: Chain
    image: bytes
    inputs: dict  # image input name -> uploaded bytes
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    abandoned: bool = False  # the request timed out: a queued job is skipped


# -- the workers --------------------------------------------------------------------------------------


class Worker:
    """One thread with its own engine (its own models) and pipelines by chain."""

    def __init__(self, service: "Service", index: int, device: str):
        self.service, self.index, self.device = service, index, device
        self.engine = None
        self.pipelines: collections.OrderedDict = collections.OrderedDict()
        self.thread = threading.Thread(target=self._loop, name=f"imgen-worker-{index}", daemon=True)

    def pipeline(self, chain: Chain):
        """The pipeline for a chain, built once; every pipeline of this worker shares its engine."""
        from .api import Pipeline
        from .engine import Engine
        from .plugins import get_registry

        if self.engine is None:
            s = self.service
            self.engine = Engine(get_registry(), device=self.device, precision=s.precision, tile=s.tile,
                                 threads=s.threads, info=s.log.info)
        pipeline = self.pipelines.get(chain.key)
        if pipeline is None:
            pipeline = Pipeline.from_specs(chain.specs, registry=get_registry(), device=self.device,
                                           max_pixels=self.service.max_pixels)
            pipeline.engine = self.engine  # one model cache per worker, whatever the chain's options
            self.pipelines[chain.key] = pipeline
            while len(self.pipelines) > PIPELINES_PER_WORKER:
                self.pipelines.popitem(last=False)
        self.pipelines.move_to_end(chain.key)
        return pipeline

    def warm(self, chain: Chain) -> None:
        """Load a chain's models, and run it once on a small image when it needs no extra input."""
        import numpy as np

        pipeline = self.pipeline(chain)
        for step in pipeline.steps:
            if step.model is not None:
                self.engine.loaded(step.model, self.engine.dtype(step))
        if not any(spec.required for spec in chain.names.values()):
            pipeline.run_array(np.full((64, 64, 3), 128, np.uint8), source="--preload",
                               inputs={name: None for name in chain.names})

    def run(self, job: Job):
        return enhance_bytes(self.pipeline(job.chain), job.chain, job.image, job.inputs, self.service.max_pixels)

    def _loop(self) -> None:
        s = self.service
        try:
            for chain in s.preload:
                started = time.monotonic()
                self.warm(chain)
                s.log.info(f"worker {self.index} ({self.device}): preloaded {chain.key} "
                           f"in {time.monotonic() - started:.1f} s")
        except Exception as exc:  # a --preload that cannot load is fatal: better than a half-ready server
            message = str(exc) if isinstance(exc, ImgenError) else f"internal error: {type(exc).__name__}: {exc}"
            s.fail(f"--preload: {message}", exc)
            return
        s.worker_ready()
        while True:
            job = s.jobs.get()
            if job is None:
                return
            started = time.monotonic()
            try:
                if not job.abandoned and job.future.set_running_or_notify_cancel():
                    try:
                        job.future.set_result(self.run(job))
                    except BaseException as exc:  # handed to the request, which answers it
                        job.future.set_exception(exc)
            finally:
                s.finished(time.monotonic() - started)


def enhance_bytes(pipeline, chain: Chain, image: bytes, uploads: dict, max_pixels: int | None):
    """Encoded image in, encoded image out (a batch.Converted), by the CLI's own batch.convert.

    Every image input of the chain is set explicitly: an uploaded part, a built-in name from the
    chain (resolved by its plugin), or nothing, so no value can name a file on the server.
    """
    from . import batch
    from . import io as imgio

    inputs: dict = {}
    for name, spec in chain.names.items():
        if name in uploads:
            inputs[name] = imgio.decode(uploads[name], name, max_pixels).array
        elif name in chain.given:
            inputs[name] = spec.resolve(chain.given[name])
        else:
            inputs[name] = None
    sniffed = imgio.sniff(image)
    fmt = chain.format or (sniffed if sniffed in imgio.FORMATS else "png")
    settings = batch.Settings(format=fmt, quality=chain.quality, strip=chain.strip, max_pixels=max_pixels)
    done = batch.convert(pipeline, image, "-", fmt, settings, inputs)
    # The response needs the whole file: encoded here, in the worker, not in the event loop.
    return replace(done, data=bytes(done.data))


class Service:
    """Workers, the queue and its admission count, readiness and draining."""

    def __init__(self, preload=(), workers=None, max_queue=8, max_upload=100 * MB, timeout=300.0,
                 device="auto", precision="auto", tile="auto", threads=None, max_pixels=None, log=None):
        from .engine import parse_tile, resolve_device

        self.log = log or Log()
        self.precision, self.threads, self.max_pixels = precision, threads, max_pixels
        self.tile = parse_tile(tile)
        self.max_upload, self.timeout = max_upload, timeout
        self.preload = []
        for text in preload:
            try:
                self.preload.append(parse_request_chain(text))
            except RequestError as exc:
                raise UsageError(f"--preload {text!r}: {exc.message}") from None
        devices = self._devices(resolve_device(device), workers)
        self.capacity = len(devices) + max_queue
        self.jobs: queue.Queue = queue.Queue()
        self.workers = [Worker(self, i, d) for i, d in enumerate(devices)]
        self._lock = threading.Lock()
        self.admitted = 0  # running + queued + uploading
        self.ready_workers = 0
        self.draining = False
        self.fatal: str | None = None
        self.mean_seconds = 1.0  # running mean of a job's time, for Retry-After

    @staticmethod
    def _devices(resolved, workers: int | None) -> list[str]:
        import torch

        if resolved.type == "cuda" and resolved.index is None:  # auto or plain cuda: spread over the GPUs
            count = torch.cuda.device_count()
            return [f"cuda:{i % count}" for i in range(workers or count)]
        return [str(resolved)] * (workers or 1)

    def start(self) -> None:
        for worker in self.workers:
            worker.thread.start()

    @property
    def ready(self) -> bool:
        return self.ready_workers == len(self.workers) and not self.draining and self.fatal is None

    def worker_ready(self) -> None:
        with self._lock:
            self.ready_workers += 1
            if self.ready_workers == len(self.workers):
                self.log.say("ready" + (f" ({len(self.preload)} chain(s) preloaded)" if self.preload else ""))

    def fail(self, message: str, exc: BaseException) -> None:
        with self._lock:
            if self.fatal is None:
                self.fatal = message
                self.log.error(message, exc)

    def admit(self) -> None:
        """Take a place for a request, or raise RequestError(503) when there is none."""
        with self._lock:
            if self.draining:
                raise RequestError(503, "the server is shutting down", "busy", retry_after=5)
            if self.fatal is not None:
                raise RequestError(503, f"the server failed to start: {self.fatal}", "busy")
            if self.admitted >= self.capacity:
                waves = math.ceil((self.admitted + 1) / len(self.workers))
                raise RequestError(503, f"busy: {self.admitted} requests in progress or queued", "busy",
                                   retry_after=max(1, math.ceil(waves * self.mean_seconds)))
            self.admitted += 1

    def release(self) -> None:
        with self._lock:
            self.admitted -= 1

    def finished(self, seconds: float) -> None:
        with self._lock:
            self.admitted -= 1
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def idle(self) -> bool:
        with self._lock:
            return self.admitted == 0

    def drain(self) -> None:
        with self._lock:
            if not self.draining:
                self.draining = True
                self.log.say(f"shutting down: finishing {self.admitted} request(s), refusing new ones")

    def stop(self) -> None:
        for _ in self.workers:
            self.jobs.put(None)


# -- HTTP ----------------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


async def _read_body(request, limit: int) -> bytes:
    """The request body, counted while it streams: more than `limit` bytes raises _TooLarge."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge()
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


async def _split_parts(request, body: bytes, limit: int, names: dict) -> tuple[bytes, dict]:
    """The main image and the extra inputs: the body itself, or the parts of a multipart form."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return body, {}
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=len(names) + 1, max_fields=len(names) + 1,
                                                         max_part_size=limit)
    except Exception as exc:  # starlette's MultiPartException and the parser's own errors
        raise RequestError(400, f"bad multipart body: {exc}", "usage") from None
    parts = {}
    try:
        for name, value in form.multi_items():
            if name != IMAGE_PART and name not in names:
                known = ", ".join([IMAGE_PART, *names])
                raise RequestError(400, f"unknown part {name!r} (this chain takes: {known})", "usage", name)
            if name in parts:
                raise RequestError(400, f"part {name!r} given twice", "usage", name)
            if not isinstance(value, UploadFile):
                raise RequestError(400, f"part {name!r} must be a file (with a filename), not a field",
                                   "usage", name)
            parts[name] = await value.read()
    finally:
        await form.close()
    if IMAGE_PART not in parts:
        raise RequestError(400, f"no part named {IMAGE_PART!r} holding the image", "usage")
    image = parts.pop(IMAGE_PART)
    return image, parts


def _check_image(data: bytes, part: str) -> None:
    from . import io as imgio

    if not data:
        raise RequestError(400, "empty body: send the image bytes", "usage", part)
    if imgio.sniff(data) is None:
        raise RequestError(415, "not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF)", "input", part)


def build_app(service: Service):
    """The Starlette application (no CORS, no redirects, nothing fetched from URLs)."""
    # Imported here, not at the top: cli.py imports this module on every imgen call.
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def refuse(error: RequestError) -> JSONResponse:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        if service.draining:
            headers["Connection"] = "close"
        body = {"error": error.message, "kind": error.kind}
        if error.part:
            body["part"] = error.part
        return JSONResponse(body, status_code=error.status, headers=headers)

    async def healthz(request):
        return PlainTextResponse("ok\n")

    async def readyz(request):
        if service.ready:
            return PlainTextResponse("ready\n")
        reason = ("shutting down" if service.draining else f"failed: {service.fatal}" if service.fatal
                  else "loading")
        return PlainTextResponse(reason + "\n", status_code=503, headers={"Retry-After": "1"})

    async def commands(request):
        return JSONResponse(describe_commands())

    async def models(request):
        return JSONResponse(describe_models())

    async def enhance(request):
        started = time.monotonic()
        query = request.query_params
        admitted = submitted = False
        job = None
        try:
            chain = parse_request_chain(query.get("chain", ""), query.get("format"), query.get("quality"),
                                        query.get("strip"))
            service.admit()
            admitted = True

            async def work():
                nonlocal submitted, job
                body = await _read_body(request, service.max_upload)
                image, uploads = await _split_parts(request, body, service.max_upload, chain.names)
                _check_image(image, IMAGE_PART)
                for name, data in uploads.items():
                    _check_image(data, name)
                job = Job(chain, image, uploads)
                service.jobs.put(job)
                submitted = True
                # shield: a timeout abandons the wait, the worker still owns the job.
                return await asyncio.shield(asyncio.wrap_future(job.future))

            result = await asyncio.wait_for(work(), timeout=service.timeout)
        except RequestError as error:
            response = refuse(error)
        except _TooLarge:
            response = refuse(RequestError(413, f"upload is over the server's limit of "
                                                f"{service.max_upload / MB:g} MB", "input", IMAGE_PART))
        except (asyncio.TimeoutError, TimeoutError):
            if job is not None:
                job.abandoned = True
            response = refuse(RequestError(504, f"no answer within the server's timeout of {service.timeout:g} s",
                                           "input"))
        except ImgenError as exc:
            part = exc.source if exc.source and exc.source != "-" else IMAGE_PART
            response = refuse(error_for(exc, None if isinstance(exc, UsageError) else part))
            if isinstance(exc, PluginError):
                service.log.error(str(exc), exc)
        except Exception as exc:  # a plugin bug: one line for the client, the traceback with --debug
            service.log.error(f"internal error: {type(exc).__name__}: {exc}", exc)
            response = refuse(RequestError(500, f"internal error: {type(exc).__name__}: {exc}", "input"))
        else:
            headers = {"Imgen-Format": result.format,
                       "Imgen-Size": "{}x{} -> {}x{}".format(*result.size_in, *result.size_out)}
            for i, warning in enumerate(result.warnings):
                headers[f"Imgen-Warning-{i + 1}"] = warning
            response = Response(result.data, media_type=CONTENT_TYPES[result.format], headers=headers)
        finally:
            if admitted and not submitted:
                service.release()
        service.log.info(f"{request.client.host if request.client else '-'} POST /v1/enhance "
                         f"chain={query.get('chain', '')!r} -> {response.status_code} "
                         f"in {time.monotonic() - started:.3f} s")
        return response

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/v1/commands", commands),
              Route("/v1/models", models), Route("/v1/enhance", enhance, methods=["POST"])]
    return Starlette(routes=routes)


def describe_commands() -> list[dict]:
    """Every command a chain may name, with its options and image inputs."""
    from .chain import build_command
    from .options import shared_params
    from .plugins import get_registry

    registry = get_registry()
    shared = {p.name for p in shared_params()}
    rows = []
    for name in sorted(registry.commands):
        command = registry.commands[name]
        click_command = build_command(command, registry)
        options = []
        for param in click_command.params:
            if param.name in shared or not isinstance(param, click.Option) or param.name in {
                    spec.name for spec in command.inputs}:
                continue
            default = param.default if isinstance(param.default, (str, int, float, bool, type(None))) else None
            options.append({"name": max(param.opts, key=len), "flag": bool(param.is_flag),
                            "type": param.type.name, "default": default, "help": param.help or ""})
        rows.append({
            "name": name,
            "help": (command.help or "").strip().splitlines()[0] if command.help else "",
            "options": options,
            "inputs": [{"name": spec.name, "mode": spec.mode, "required": spec.required, "help": spec.help}
                       for spec in command.inputs],
            "models": [m.name for m in registry.models_for(name) if not m.name.startswith("file:")],
        })
    return rows


def describe_models() -> list[dict]:
    """The registered models (no file paths: they are the server's business)."""
    from .plugins import get_registry

    registry = get_registry()
    return [{"name": m.name, "command": m.command, "scale": m.scale, "default": m.default,
             "precisions": list(m.precisions), "description": m.description}
            for m in sorted(registry.models.values(), key=lambda m: (m.command, m.name))
            if not m.name.startswith("file:")]


def run_server(service: Service, host: str, port: int) -> int:
    """Serve until SIGTERM/Ctrl-C has drained the work (exit 0) or a --preload failed (exit 3)."""
    import uvicorn

    log = service.log

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # First signal: drain (readiness and new requests 503, admitted ones finish). Second
            # Ctrl-C: now. uvicorn itself would stop listening at once, so that new requests met
            # a refused connection instead of a 503.
            if service.draining:
                if sig == signal.SIGINT:
                    self.force_exit = True
                    self.should_exit = True
                return
            self.drain_deadline = time.monotonic() + service.timeout
            service.drain()

        async def on_tick(self, counter):
            if service.fatal is not None:
                self.should_exit = True
            elif service.draining and (service.idle() or time.monotonic() > self.drain_deadline):
                self.should_exit = True
            return await super().on_tick(counter)

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                address = self.servers[0].sockets[0].getsockname()
                devices = ", ".join(w.device for w in service.workers)
                log.say(f"listening on http://{_url_host(address[0])}:{address[1]} "
                        f"({len(service.workers)} worker(s) on {devices}, queue {service.capacity - len(service.workers)})")

    config = uvicorn.Config(build_app(service), host=host, port=port, lifespan="off",
                            log_level="info" if log.debug else "warning", access_log=False,
                            server_header=False, timeout_graceful_shutdown=5)
    server = Server(config)
    service.start()
    try:
        server.run()
    finally:
        service.stop()
    if service.fatal is not None:
        return PLUGIN
    if not server.started:
        return FAILED  # uvicorn said why (address in use, ...)
    log.say("stopped")
    return OK


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
