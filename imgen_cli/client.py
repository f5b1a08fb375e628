"""`imgen --server URL CHAIN INPUT...`: the local CLI's files, a running `imgen serve`'s models.

Inputs are planned, named, checked and written exactly as without --server (batch.plan and
batch.run: the same names, format rules, atomic writes, messages and exit statuses); only the
pixels are made by the server, through `Remote.convert` in place of batch.convert. Only the standard library talks HTTP here, so a shell loop over many small files
pays neither torch's import nor a model load per file.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import time
import urllib.parse
import uuid
from dataclasses import dataclass

import click

from .errors import InputError, PluginError, UsageError
from .serve import SERVER_OPTIONS

# A busy server answers 503 with Retry-After; a script would rather wait than fail.
BUSY_PATIENCE_S = 300


@dataclass
class Answer:
    data: bytes
    format: str
    size: str
    warnings: list


class Remote:
    """One keep-alive HTTP connection to an `imgen serve`, and the chain it is asked to run."""

    def __init__(self, url: str, contexts: list[click.Context], specs: list, timeout: float = 3600):
        for sub in contexts:
            for name in SERVER_OPTIONS:
                source = sub.get_parameter_source(name)
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
                    flag = "--" + name.replace("_", "-")
                    raise UsageError(f"{flag} is the server's setting (imgen serve {flag}), not a client's")
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"--server {url}: give an http:// URL, e.g. http://127.0.0.1:8800")
        self.url = url
        self.secure = parsed.scheme == "https"
        self.host, self.port = parsed.hostname, parsed.port
        self.base = parsed.path.rstrip("/")
        self.chain = " ".join(shlex.quote(word) for word in chain_words(contexts))
        self.inputs = [image_input for spec in specs for image_input in spec.inputs.values()]
        self.timeout = timeout
        self._connection = None

    def convert(self, pipeline, data: bytes, source: str, fmt: str, settings, inputs=None, output=None):
        """batch.convert's work done by the server: `data` in, a batch.Converted out (the server
        encodes too: its bytes are written as they came, so `output` is not needed here)."""
        from . import batch
        from . import io as imgio

        extras = {}
        for spec, value in self.inputs:
            path = batch.match_input(spec, value, source)
            if path is not None:
                extras[spec.name] = (path, imgio.read_bytes(path))
        answer = self.enhance(data, source, fmt, settings.quality, settings.strip, extras)
        sizes = [tuple(int(n) for n in side.split("x")) for side in answer.size.split(" -> ")]
        return batch.Converted(answer.data, answer.format, tuple(answer.warnings), sizes[0], sizes[1])

    def enhance(self, data: bytes, source: str, fmt: str, quality: int | None, strip: bool,
                extras: dict[str, tuple[str, bytes]]) -> Answer:
        """POST one image (and its extra inputs: name -> (local path, bytes)); errors become
        the CLI's: the server's one-line reason about `source` or the extra input's file."""
        query = {"chain": self.chain, "format": fmt}
        if quality is not None:
            query["quality"] = str(quality)
        if strip:
            query["strip"] = "1"
        path = f"{self.base}/v1/enhance?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
        if extras:
            body, content_type = _multipart({"image": (source, data), **extras})
        else:
            body, content_type = data, "application/octet-stream"
        waited = 0.0
        while True:
            status, headers, payload = self._post(path, body, content_type)
            if status == 200:
                warnings = [value for key, value in sorted(headers.items()) if key.startswith("imgen-warning-")]
                return Answer(payload, headers.get("imgen-format", fmt), headers.get("imgen-size", ""), warnings)
            error = _error(status, payload)
            if status == 503 and error.get("kind") == "busy" and "retry-after" in headers and waited < BUSY_PATIENCE_S:
                pause = min(float(headers["retry-after"]) if headers["retry-after"].isdigit() else 1.0, 30.0)
                time.sleep(pause)
                waited += pause
                continue
            part = error.get("part")
            where = extras[part][0] if part in extras else source
            message = error.get("error") or f"server answered HTTP {status}"
            kind = error.get("kind")
            if kind == "usage":
                raise UsageError(f"server: {message}")
            if kind == "plugin":
                raise PluginError(f"server: {message}")
            raise InputError(message, where)

    def _post(self, path: str, body: bytes, content_type: str):
        # A kept-alive connection the server has closed fails on first use: reconnect once.
        for attempt in (0, 1):
            fresh = self._connection is None
            try:
                if fresh:
                    kind = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
                    self._connection = kind(self.host, self.port, timeout=self.timeout)
                self._connection.request("POST", path, body=body, headers={"Content-Type": content_type})
                response = self._connection.getresponse()
                payload = response.read()
                headers = {key.lower(): value for key, value in response.getheaders()}
                if headers.get("connection", "").lower() == "close":
                    self.close()
                return response.status, headers, payload
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if fresh or attempt:
                    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                    raise PluginError(f"cannot reach the server at {self.url}: {reason}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _error(status: int, payload: bytes) -> dict:
    try:
        error = json.loads(payload)
        return error if isinstance(error, dict) else {}
    except ValueError:
        return {"error": f"server answered HTTP {status}"}


def _multipart(parts: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for name, (filename, data) in parts.items():
        safe = os.path.basename(filename).replace('"', "_").replace("\r", "_").replace("\n", "_") or name
        chunks += [f"--{boundary}\r\n".encode(),
                   f'Content-Disposition: form-data; name="{name}"; filename="{safe}"\r\n'.encode("utf-8"),
                   b"Content-Type: application/octet-stream\r\n\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


# -- the chain as the server should hear it ------------------------------------------------------------


def chain_words(contexts: list[click.Context]) -> list[str]:
    """The chain's command words without inputs, outputs and image inputs (those travel as bytes).

    Rebuilt from what click parsed, then parsed again and compared, so the server runs exactly
    the options the command line gave."""
    from . import chain
    from .cli import HOST_COMMANDS
    from .plugins import get_registry

    words: list[str] = []
    for sub in contexts:
        if words:
            words.append(chain.CHAIN)
        words.extend(_step_words(sub))
    again = chain.parse_contexts(words, get_registry(), reserved=HOST_COMMANDS)
    if [_own_params(c) for c in again] != [_own_params(c) for c in contexts]:
        raise UsageError("this chain cannot be sent to a server as written")
    return words


def _skipped(sub: click.Context) -> set[str]:
    """Shared options and image inputs: not words of the chain the server hears."""
    from .options import shared_params
    from .plugins import get_registry

    command = get_registry().commands.get(sub.info_name)
    return {p.name for p in shared_params()} | ({spec.name for spec in command.inputs} if command else set())


def _own_params(sub: click.Context) -> dict:
    skip = _skipped(sub)
    return {k: v for k, v in sub.params.items() if k not in skip}


def _step_words(sub: click.Context) -> list[str]:
    words = [sub.info_name]
    skip = _skipped(sub)
    for param in sub.command.params:
        if param.name in skip or not isinstance(param, click.Option):
            continue
        source = sub.get_parameter_source(param.name)
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        value = sub.params[param.name]
        if param.is_flag and param.is_bool_flag:
            words.append(param.opts[0] if value else (param.secondary_opts or [None])[0])
            if words[-1] is None:
                raise UsageError(f"{sub.info_name}: cannot send {param.opts[0]} to a server")
            continue
        if param.is_flag or param.count:
            raise UsageError(f"{sub.info_name}: cannot send {param.opts[0]} to a server")
        values = value if param.multiple else [value]
        for one in values:
            items = one if param.nargs != 1 else [one]
            words += [param.opts[0], *(repr(v) if isinstance(v, float) else str(v) for v in items)]
    return words
