"""`imgen serve`: warm-server latency against the CLI's whole command, and a bounded load test.

    python benchmarks/bench_serve.py latency [--runs 20] [--size 512]
    python benchmarks/bench_serve.py load [--requests 200] [--clients 8] [--workers 1] [--max-queue 4]

latency: a 512x512 `denoise` PNG, alternately through `imgen denoise in.png -o out.png` (a fresh
process: Python, torch, the model, the image) and as a request to one warm server started with
`--preload denoise`; medians of N each, from the same run, and the two outputs compared byte for
byte.

load: a fixed number of requests from concurrent clients (threads, loopback only; after a 503 a
client waits Retry-After, at most --max-pause, then takes its next request), each answer checked: the exact bytes of a reference answer, or a 503 (busy) with Retry-After.
Anything else (an error, a wrong or cut image, a lost request) is counted and fails the run. The
server's resident memory (VmRSS) and peak (VmHWM) are read from /proc before and after.
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMGEN = [str(Path(sys.executable).with_name("imgen"))]


def make_image(path: Path, size: int, seed: int = 0) -> bytes:
    from imgen_cli.io import Picture, encode
    from imgen_cli.testing import natural_image

    data = encode(Picture(natural_image(size, size, seed=seed), "png"), "png")[0]
    path.write_bytes(data)
    return data


class Server:
    def __init__(self, *args):
        self.process = subprocess.Popen(IMGEN + ["serve", "--port", "0", *args], stderr=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.process.stderr], daemon=True).start()
        while True:
            line = self.lines.get(timeout=600)
            if "listening on http://" in line:
                break
        parsed = urllib.parse.urlsplit(line.split("listening on ")[1].split()[0])
        self.host, self.port = parsed.hostname, parsed.port
        while self.get("/readyz")[0] != 200:
            time.sleep(0.2)

    def get(self, path):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=600)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()

    def post(self, chain: str, body: bytes, connection=None):
        own = connection is None
        connection = connection or http.client.HTTPConnection(self.host, self.port, timeout=600)
        connection.request("POST", "/v1/enhance?" + urllib.parse.urlencode({"chain": chain}), body=body)
        response = connection.getresponse()
        answer = (response.status, dict(response.getheaders()), response.read())
        if own:
            connection.close()
        return answer

    def memory(self) -> dict:
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # MiB
        return fields

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def latency(args) -> int:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        body = make_image(folder / "in.png", args.size)
        server = Server("--workers", "1", "--preload", "denoise")
        server.post("denoise", body)  # the first request at this size (kernel choice)
        cli, served = [], []
        try:
            for _ in range(args.runs):
                started = time.perf_counter()
                subprocess.run(IMGEN + ["-q", "denoise", str(folder / "in.png"), "-o", str(folder / "out.png"),
                                        "--overwrite"], check=True)
                cli.append(time.perf_counter() - started)
                started = time.perf_counter()
                # A new connection each time: the CLI run outlasts the server's keep-alive.
                status, _, answer = server.post("denoise", body)
                served.append(time.perf_counter() - started)
                assert status == 200, answer
            same = answer == (folder / "out.png").read_bytes()
        finally:
            server.stop()
    cli_median, served_median = statistics.median(cli), statistics.median(served)
    print(f"{args.size}x{args.size} denoise, {args.runs} runs each, interleaved, {os.cpu_count()} CPUs")
    print(f"  CLI whole command   median {cli_median:.3f} s  (min {min(cli):.3f}, max {max(cli):.3f})")
    print(f"  warm server request median {served_median:.3f} s  (min {min(served):.3f}, max {max(served):.3f})")
    print(f"  speed-up {cli_median / served_median:.1f}x; server answer == CLI file: {same}")
    return 0 if same else 1


def load(args) -> int:
    with tempfile.TemporaryDirectory() as folder:
        bodies = [make_image(Path(folder) / f"in{i}.png", args.size, seed=i) for i in range(4)]
    server = Server("--workers", str(args.workers), "--max-queue", str(args.max_queue), "--preload", args.chain)
    try:
        expected = []
        for body in bodies:  # reference answers, one at a time
            status, _, answer = server.post(args.chain, body)
            assert status == 200, answer
            expected.append(answer)
        before = server.memory()
        tickets = queue.Queue()
        for i in range(args.requests):
            tickets.put(i)
        outcomes = {"ok": 0, "busy": 0, "busy_without_retry_after": 0, "wrong": 0, "error": 0}
        lock = threading.Lock()
        seconds = []

        def client():
            connection = http.client.HTTPConnection(server.host, server.port, timeout=600)
            while True:
                try:
                    i = tickets.get_nowait()
                except queue.Empty:
                    break
                started = time.perf_counter()
                try:
                    status, headers, answer = server.post(args.chain, bodies[i % len(bodies)], connection)
                except (OSError, http.client.HTTPException):
                    connection.close()
                    connection = http.client.HTTPConnection(server.host, server.port, timeout=600)
                    with lock:
                        outcomes["error"] += 1
                    continue
                with lock:
                    if status == 200:
                        outcomes["ok" if answer == expected[i % len(bodies)] else "wrong"] += 1
                        seconds.append(time.perf_counter() - started)
                    elif status == 503:
                        outcomes["busy" if headers.get("retry-after") else "busy_without_retry_after"] += 1
                    else:
                        outcomes["error"] += 1
                if status == 503:  # as a polite client does, within the test's time bound
                    retry = headers.get("retry-after", "1")
                    time.sleep(min(float(retry) if retry.isdigit() else 1.0, args.max_pause))
            connection.close()

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        duration = time.perf_counter() - started
        after = server.memory()
        ready = server.get("/readyz")[0]
    finally:
        code = server.stop()
    answered = sum(outcomes.values())
    print(f"{args.requests} requests of {args.chain!r} on {args.size}x{args.size} PNGs, {args.clients} clients, "
          f"{args.workers} worker(s), queue {args.max_queue}: {duration:.1f} s")
    print(f"  answers {answered}/{args.requests}: {outcomes['ok']} correct images, {outcomes['busy']} 503 busy "
          f"(Retry-After), {outcomes['wrong']} wrong images, {outcomes['error']} errors, "
          f"{outcomes['busy_without_retry_after']} 503 without Retry-After")
    if seconds:
        print(f"  200s: median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s")
    print(f"  server memory before load: RSS {before['VmRSS']:.0f} MiB, peak {before['VmHWM']:.0f} MiB; "
          f"after: RSS {after['VmRSS']:.0f} MiB, peak {after['VmHWM']:.0f} MiB")
    print(f"  /readyz after the load: {ready}; exit status after SIGTERM: {code}")
    good = (answered == args.requests and outcomes["wrong"] == outcomes["error"] == 0
            and outcomes["busy_without_retry_after"] == 0 and outcomes["ok"] > 0 and code == 0)
    return 0 if good else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("latency")
    one.add_argument("--runs", type=int, default=20)
    one.add_argument("--size", type=int, default=512)
    many = sub.add_parser("load")
    many.add_argument("--requests", type=int, default=200)
    many.add_argument("--clients", type=int, default=8)
    many.add_argument("--workers", type=int, default=1)
    many.add_argument("--max-queue", type=int, default=4)
    many.add_argument("--size", type=int, default=64)
    many.add_argument("--chain", default="denoise --sigma 15")
    many.add_argument("--max-pause", type=float, default=2.0,
                      help="a client waits Retry-After seconds after a 503, at most this long")
    args = parser.parse_args()
    return latency(args) if args.mode == "latency" else load(args)


if __name__ == "__main__":
    sys.exit(main())
