"""`imgen serve` as a real process on a loopback port, spoken to over real HTTP, and the
`imgen --server URL` client: answers equal the CLI's files byte for byte, limits are enforced,
a full queue says 503, readiness waits for --preload, SIGTERM drains."""

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from conftest import imgen_cmd, imgen_env, run_imgen

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

PLUGINS = "imgen_test_tiny,imgen_test_serve"


class Server:
    """An `imgen serve --port 0` process; its stderr is collected line by line."""

    def __init__(self, *args):
        self.process = subprocess.Popen(imgen_cmd() + ["serve", "--port", "0", *args], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        env=imgen_env(PLUGINS))
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for("listening on http://")
        self.url = line.split("listening on ")[1].split()[0]
        self.host, self.port = urllib.parse.urlsplit(self.url).hostname, urllib.parse.urlsplit(self.url).port

    def _read(self):
        for line in self.process.stderr:
            self.log.append(line)
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if text in line:
                return line
        raise AssertionError(f"server never said {text!r}:\n{''.join(self.log)}")

    def request(self, method: str, path: str, body=None, headers=None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def enhance(self, chain: str, body: bytes, headers=None, **query):
        path = "/v1/enhance?" + urllib.parse.urlencode({"chain": chain, **query})
        return self.request("POST", path, body, headers)

    def wait_ready(self, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("GET", "/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"never ready:\n{''.join(self.log)}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def server():
    """One worker, one queue place, 1 MB uploads, 1 MP images, denoise loaded before ready."""
    server = Server("--workers", "1", "--max-queue", "1", "--max-upload", "1", "--max-pixels", "1000000",
                    "--preload", "denoise")
    server.wait_ready()
    yield server
    server.stop()


def png(tmp_path, name="in.png", **kwargs):
    from imgen_cli.io import Picture, encode
    from imgen_cli.testing import natural_image

    path = tmp_path / name
    path.write_bytes(encode(Picture(natural_image(**kwargs), "png"), "png")[0])
    return path


@pytest.fixture
def serve_plugins(test_plugins):
    import imgen_test_serve

    test_plugins.add(imgen_test_serve, "imgen_test_serve")
    return test_plugins


@pytest.fixture
def local(imgen, tmp_path):
    """The CLI in this process (models loaded here, not in the server): bytes of `imgen ARGS -o out`."""
    def run(args, name="local.png"):
        result = imgen([*args, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.stderr
        return (tmp_path / name).read_bytes()

    return run


@pytest.mark.parametrize("kind", [dict(height=40, width=56), dict(height=32, width=48, channels=4, dtype="uint16")],
                         ids=["rgb8", "rgba16"])
def test_answer_equals_the_cli_output_byte_for_byte(server, local, tmp_path, kind):
    source = png(tmp_path, **kind)
    status, headers, body = server.enhance("denoise --sigma 15", source.read_bytes())
    assert status == 200, body
    assert headers["content-type"] == "image/png" and headers["imgen-format"] == "png"
    assert body == local(["denoise", "--sigma", "15", source])


def test_format_query_and_multipart_extra_input(server, test_plugins, local, tmp_path):
    import numpy as np

    from imgen_cli.io import Picture, encode

    source = png(tmp_path, height=24, width=32)
    mask = np.zeros((24, 32), np.uint8)
    mask[4:12, 8:20] = 255
    (tmp_path / "mask.png").write_bytes(encode(Picture(mask[:, :, None], "png"), "png")[0])
    boundary = "xYzBoundary"
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.png"\r\n'
                    f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
                    for name, data in [("image", source.read_bytes()), ("mask", (tmp_path / "mask.png").read_bytes())])
    body += f"--{boundary}--\r\n".encode()
    status, headers, answer = server.enhance("fill --value 0.25", body, format="webp", quality="100",
                                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, answer
    assert headers["content-type"] == "image/webp"
    expected = local(["fill", "--value", "0.25", "--mask", tmp_path / "mask.png", source, "--format", "webp",
                      "--quality", "100"], name="local.webp")
    assert answer == expected
    # The mask is required: without its part the chain is a usage error, as on the command line.
    status, _, answer = server.enhance("fill", source.read_bytes())
    assert status == 400 and "mask" in json.loads(answer)["error"]


def test_client_writes_the_file_the_local_cli_writes(server, test_plugins, local, tmp_path):
    source = png(tmp_path, height=40, width=56)
    work = tmp_path / "remote"
    work.mkdir()
    (work / "in.png").write_bytes(source.read_bytes())
    # In-process, to see what the client imports: the CLI's parsing and files, no torch or numpy.
    code = ("import sys; from imgen_cli.cli import cli; "
            f"code = cli.main(args=['--server', {server.url!r}, 'denoise', '--sigma', '15', 'in.png'], "
            "standalone_mode=False); "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'client imported torch/numpy'; "
            "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=imgen_env(PLUGINS), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote in-denoise.png (56x40 -> 56x40)" in result.stderr
    assert (work / "in-denoise.png").read_bytes() == local(["denoise", "--sigma", "15", source])
    # Same refusals and statuses as without --server: the output exists now.
    again = run_imgen(["--server", server.url, "denoise", "--sigma", "15", "in.png"], cwd=work, plugins=PLUGINS)
    assert again.returncode == 1 and b"in-denoise.png: exists" in again.stderr
    # IMGEN_SERVER, a bad input among good ones (status 1, the good one written), an engine option.
    (work / "bad.png").write_bytes(b"not an image")
    env = {**imgen_env(PLUGINS), "IMGEN_SERVER": server.url}
    batch = subprocess.run(imgen_cmd() + ["tinyup", "bad.png", "in.png", "-o", "out/"], cwd=work, env=env,
                           capture_output=True, timeout=120)
    assert batch.returncode == 1, batch.stderr
    assert b"imgen: error: bad.png: not a supported image" in batch.stderr
    assert (work / "out" / "in.png").read_bytes() == local(["tinyup", source], name="tiny.png")
    usage = subprocess.run(imgen_cmd() + ["denoise", "--device", "cpu", "in.png"], cwd=work, env=env,
                           capture_output=True, timeout=120)
    assert usage.returncode == 2 and b"--device is the server's setting" in usage.stderr


def test_size_and_blend_in_a_request_chain_and_through_the_client(server, local, tmp_path):
    source = png(tmp_path, height=30, width=40)
    status, headers, body = server.enhance("denoise + sr --fit 800x600", source.read_bytes())
    assert status == 200, body
    assert headers["imgen-size"] == "40x30 -> 800x600"
    assert body == local(["denoise", "+", "sr", "--fit", "800x600", source])
    # imgen --server sends the step options as written: each step's --blend, the size.
    remote = run_imgen(["--server", server.url, "denoise", "--blend", "0.5", "+", "sr", "--width", "100", source,
                        "-o", tmp_path / "remote.png"], plugins=PLUGINS)
    assert remote.returncode == 0, remote.stderr
    expected = local(["denoise", "--blend", "0.5", "+", "sr", "--width", "100", source], name="blend.png")
    assert (tmp_path / "remote.png").read_bytes() == expected


def test_unreachable_server_is_a_one_line_error(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = png(tmp_path)
    result = run_imgen(["--server", f"http://127.0.0.1:{port}", "denoise", source, "-o", tmp_path / "out.png"])
    assert result.returncode == 3
    assert result.stderr.decode().count("\n") == 1 and "cannot reach the server" in result.stderr.decode()
    assert not (tmp_path / "out.png").exists()


def test_bad_chains_are_400_with_the_cli_reason(server, tmp_path):
    body = png(tmp_path).read_bytes()
    for chain, reason in [("nosuch", "no such command 'nosuch'"),
                          ("denoise --sigma 99", "99.0 is not in the range"),
                          ("denoise -o out.png", "--output has no place in a request"),
                          ("denoise --device cpu", "--device is set when the server starts"),
                          ("denoise --model /etc/passwd", "no such model on this server"),
                          ("denoise --help", "GET /v1/commands"),
                          ("denoise +", "empty step in chain")]:
        status, _, answer = server.enhance(chain, body)
        assert status == 400, (chain, answer)
        assert reason in json.loads(answer)["error"], (chain, answer)
        assert json.loads(answer)["kind"] == "usage"


def test_bad_images_are_415_and_422_with_the_cli_reason(server, tmp_path):
    import numpy as np

    status, _, answer = server.enhance("denoise", b"GIF89 is what this is not" * 10)
    assert status == 415 and json.loads(answer) == {
        "error": "not a supported image (PNG, JPEG, WebP, TIFF, BMP or GIF)", "kind": "input", "part": "image"}
    truncated = png(tmp_path).read_bytes()[:300]
    status, _, answer = server.enhance("denoise", truncated)
    assert status == 422 and json.loads(answer)["error"].startswith("cannot decode PNG image")
    # The decompression-bomb limit (the fixture's --max-pixels is 1 MP): a 2000x2000 PNG of 4 kB.
    from imgen_cli.io import Picture, encode

    status, _, answer = server.enhance("denoise", encode(Picture(np.zeros((2000, 2000, 1), np.uint8), "png"), "png")[0])
    assert status == 422 and json.loads(answer)["error"] == (
        "image is 2000x2000, 4 MP, above the 1 MP limit (raise it with --max-pixels)")


def test_uploads_over_the_limit_are_413_counted_while_streaming(server):
    big = os.urandom(1536 * 1024)  # the fixture's limit is 1 MB
    status, _, answer = server.enhance("denoise", big)
    assert status == 413 and "limit of 1 MB" in json.loads(answer)["error"]

    def chunks():  # chunked transfer: no Content-Length to go by
        for start in range(0, len(big), 64 * 1024):
            yield big[start:start + 64 * 1024]

    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    connection.request("POST", "/v1/enhance?chain=denoise", body=chunks(), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and "limit of 1 MB" in json.loads(response.read())["error"]
    connection.close()
    assert server.request("GET", "/healthz")[0] == 200


def test_a_full_queue_answers_503_with_retry_after(server, tmp_path):
    body = png(tmp_path, height=16, width=16).read_bytes()
    answers = []

    def slow():
        answers.append(server.enhance("wait --seconds 1.5", body))

    threads = [threading.Thread(target=slow) for _ in range(2)]  # one running, one queued
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    status, headers, answer = server.enhance("wait --seconds 0", body)
    for thread in threads:
        thread.join()
    assert status == 503, answer
    assert int(headers["retry-after"]) >= 1 and json.loads(answer)["kind"] == "busy"
    assert [a[0] for a in answers] == [200, 200]
    assert server.enhance("wait --seconds 0", body)[0] == 200


def test_listings(server):
    status, _, answer = server.request("GET", "/v1/commands")
    commands = {c["name"]: c for c in json.loads(answer)}
    assert status == 200 and {"denoise", "sr", "fill", "wait"} <= set(commands)
    assert {"name": "mask", "mode": "L", "required": True, "help": "Mask (white = fill)."} in commands["fill"]["inputs"]
    assert "--sigma" in [o["name"] for o in commands["denoise"]["options"]]
    status, _, answer = server.request("GET", "/v1/models")
    models = {m["name"]: m for m in json.loads(answer)}
    assert status == 200 and models["tiny-x2"]["command"] == "tinyup" and "weights" not in models["tiny-x2"]
    assert server.request("GET", "/v1/enhance")[0] == 405
    assert server.request("GET", "/nowhere")[0] == 404


def test_readiness_waits_for_preload_and_sigterm_drains(tmp_path, serve_plugins, local):
    server = Server("--workers", "1", "--preload", "wait --seconds 3")
    try:
        assert server.request("GET", "/healthz")[0] == 200
        status, _, answer = server.request("GET", "/readyz")
        assert (status, answer) == (503, b"loading\n")
        server.wait_ready()
        source = png(tmp_path, height=20, width=28)
        answers = []
        flight = threading.Thread(target=lambda: answers.append(server.enhance("wait --seconds 2", source.read_bytes())))
        flight.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        server.wait_for("shutting down")
        status, headers, answer = server.enhance("wait --seconds 0", source.read_bytes())
        assert status == 503 and json.loads(answer)["error"] == "the server is shutting down"
        assert headers.get("retry-after")
        assert server.request("GET", "/readyz")[0] == 503
        flight.join()
        assert answers[0][0] == 200 and answers[0][2] == local(["wait", "--seconds", "0", source])
        assert server.process.wait(timeout=30) == 0
        assert "stopped" in server.log[-1]
    finally:
        server.stop()
