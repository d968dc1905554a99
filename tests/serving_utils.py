"""Helpers for the serving tests: free loopback ports, a live `promptembedder serve` subprocess, raw HTTP, and
backends whose timing a test controls. `python serving_utils.py PORT GRACE_S` serves a SleepyBackend."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn

HOST = "127.0.0.1"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def request(port: int, method: str, path: str, body: bytes | dict | None = None, timeout: float = 30,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One HTTP request on loopback; returns status and decoded JSON body (a non-JSON body fails the test)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    status, payload = response.status, response.read()
    connection.close()
    return status, json.loads(payload) if payload else {}


def wait_healthy(port: int, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if request(port, "GET", "/health", timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"server on port {port} did not come up in {timeout} s")


def launch_server(model: str | Path, *args: str, log=None) -> tuple[subprocess.Popen, int]:
    """`promptembedder serve MODEL` in a subprocess on a free loopback port (call wait_healthy before use).

    Its output goes to `log` (an open file), so a failing test can show the server's side."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # the test process shares the cores: oversubscribed torch threads crawl
    process = subprocess.Popen(
        [sys.executable, "-m", "promptembedder", "serve", str(model), "--host", HOST, "--port", str(port), *args],
        env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    return process, port


class ThreadServer:
    """An app under uvicorn in a background thread (for tests that need a controllable backend)."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_healthy(self.port, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def wait_until(condition, timeout: float = 10, what: str = "the condition") -> None:
    """Poll `condition()` every 5 ms; a test that would wait forever fails instead."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.005)


class SleepyBackend:
    """Encodes like a model that takes `seconds_per_text` per text; records each batch (its key and size)."""

    dimension = 4

    def __init__(self, seconds_per_text: float = 0.05):
        self.seconds_per_text, self.batches = seconds_per_text, []

    def key(self, instruction, task, prompt_type):
        return instruction

    def encode(self, texts, key):
        self.batches.append((key, len(texts)))
        time.sleep(self.seconds_per_text * len(texts))
        return np.full((len(texts), 4), 0.5, dtype=np.float32)

    def token_counts(self, texts):
        return [1] * len(texts)


def launch_sleepy_server(grace_s: float, log=None) -> tuple[subprocess.Popen, int]:
    """A `serving.serve` process (signals handled as `promptembedder serve` handles them) over a SleepyBackend."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, __file__, str(port), str(grace_s)], env=env, stdout=log,
                               stderr=subprocess.STDOUT, text=True)
    return process, port


if __name__ == "__main__":
    from promptembedder.serving import ServerSettings, serve

    serve(SleepyBackend(), ServerSettings("sleepy", max_batch_size=1, max_wait_ms=0, grace_period_s=float(sys.argv[2])),
          host=HOST, port=int(sys.argv[1]))
