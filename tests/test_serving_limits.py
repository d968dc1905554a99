"""The server's bounds: options checked before loading, per-text and per-queue limits, the prompt cache's size,
large requests taking turns, disconnects, errors inside encode, and SIGTERM's grace period."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")

from serving_utils import (  # noqa: E402
    HOST,
    SleepyBackend,
    ThreadServer,
    launch_sleepy_server,
    request,
    wait_healthy,
    wait_until,
)
from typer.testing import CliRunner  # noqa: E402

from promptembedder.cli import app as cli  # noqa: E402
from promptembedder.models.prompt_embedder import PromptEmbedder  # noqa: E402
from promptembedder.serving import EmbedderBackend, ServerSettings, create_app  # noqa: E402
from promptembedder.serving.schema import Limits  # noqa: E402

POST = "/v1/embeddings"


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    torch.manual_seed(0)
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
                           num_soft_tokens=3, device="cpu")
    return EmbedderBackend(model, prompt_cache_size=2)


@pytest.mark.parametrize("option", [("--max-batch-size", "0"), ("--port", "99999"), ("--max-items", "-1"),
                                    ("--max-queue", "0"), ("--max-wait-ms", "nan"), ("--grace-period", "-1"),
                                    ("--max-text-chars", "0"), ("--prompt-cache-size", "-1"), ("--max-body-mb", "0"),
                                    ("--body-timeout", "0")])
def test_serve_options_checked_before_loading(tmp_path, option):
    """A bad value is named at once; the model (here a folder that does not exist) is never reached."""
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "not-loaded"), *option])
    assert result.exit_code == 2, result.output
    assert option[0] in result.output and "not-loaded" not in result.output, result.output


def test_request_larger_than_the_queue_is_413_not_retry_later():
    settings = ServerSettings("m", max_queue=3)
    with ThreadServer(create_app(SleepyBackend(0), settings)) as server:
        status, body = request(server.port, "POST", POST, {"input": ["a", "b", "c", "d"]})
        assert status == 413 and body["error"]["code"] == "request_too_large"
        assert "--max-queue" in body["error"]["message"]
        assert request(server.port, "POST", POST, {"input": ["a", "b", "c"]})[0] == 200


def test_text_length_capped_before_tokenising():
    settings = ServerSettings("m", limits=Limits(max_text_chars=10))
    with ThreadServer(create_app(SleepyBackend(0), settings)) as server:
        status, body = request(server.port, "POST", POST, {"input": ["short", "x" * 11]})
        assert status == 400 and body["error"]["param"] == "input" and "input[1]" in body["error"]["message"]
        assert request(server.port, "POST", POST, {"input": "x" * 10})[0] == 200


def test_a_body_that_never_arrives_is_408_and_frees_the_connection():
    """A client that declares 100 bytes and sends 10 gets 408 after --body-timeout, not a connection held forever;
    other clients are served meanwhile."""
    settings = ServerSettings("m", limits=Limits(body_timeout=1))
    with ThreadServer(create_app(SleepyBackend(0), settings)) as server:
        slow = socket.create_connection((HOST, server.port), timeout=10)
        slow.sendall(f"POST {POST} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100\r\n\r\n".encode() + b'{"input": ')
        assert request(server.port, "POST", POST, {"input": "x"})[0] == 200
        start = time.monotonic()
        response = http.client.HTTPResponse(slow)
        response.begin()
        status, answer = response.status, response.read().decode()
        slow.close()
        assert status == 408 and "request_timeout" in answer and "--body-timeout" in answer
        assert time.monotonic() - start < 5


@pytest.mark.parametrize("value", ["3", True, 3.0])
def test_dimensions_must_be_an_integer(value):
    with ThreadServer(create_app(SleepyBackend(0), ServerSettings("m"))) as server:
        status, body = request(server.port, "POST", POST, {"input": "x", "dimensions": value})
        assert status == 400 and body["error"]["param"] == "dimensions"
        assert request(server.port, "POST", POST, {"input": "x", "dimensions": 3})[0] == 200


def test_token_counts_are_of_the_truncated_text(tiny_backend):
    long = " ".join(["word"] * 2000)
    counts = tiny_backend.token_counts([long, "a man"])
    assert counts[0] <= tiny_backend.embedder.backbone.max_length < 2000 and 0 < counts[1] < 10


def test_prompt_cache_is_lru_bounded_and_shown_in_health(tiny_backend):
    instructions = [f"Retrieve passages about topic number {i}." for i in range(5)]
    with ThreadServer(create_app(tiny_backend, ServerSettings("m"))) as server:
        for instruction in instructions:
            assert request(server.port, "POST", POST, {"input": "a text", "instruction": instruction})[0] == 200
        cache = request(server.port, "GET", "/health")[1]["prompt_cache"]
    assert cache == {"size": 2, "max_size": 2}
    assert list(tiny_backend.prompt_cache) == instructions[-2:]  # the least recently used went first


def test_instruction_over_p_context_is_400_and_other_failures_500_json(tiny_backend):
    with ThreadServer(create_app(tiny_backend, ServerSettings("m"))) as server:
        status, body = request(server.port, "POST", POST, {"input": "a text", "instruction": "word " * 300})
        assert status == 400 and body["error"]["param"] == "instruction" and "context" in body["error"]["message"]

    class Broken(SleepyBackend):
        def encode(self, texts, key):
            raise RuntimeError("CUDA out of memory (simulated)")

    with ThreadServer(create_app(Broken(), ServerSettings("m"))) as server:
        status, body = request(server.port, "POST", POST, {"input": "a text"})
        assert status == 500 and body["error"]["type"] == "server_error" and "CUDA" not in body["error"]["message"]
        assert request(server.port, "GET", "/health")[0] == 200  # the worker lives on


def test_large_request_takes_turns_and_a_gone_client_loses_its_batches():
    backend = SleepyBackend(0.02)
    settings = ServerSettings("m", max_batch_size=2, max_wait_ms=0)
    with ThreadServer(create_app(backend, settings)) as server, ThreadPoolExecutor(2) as pool:
        big = pool.submit(request, server.port, "POST", POST, {"input": ["t"] * 40, "instruction": "big"})
        wait_until(lambda: backend.batches, what="a first batch")
        small = pool.submit(request, server.port, "POST", POST, {"input": "t", "instruction": "small"})
        assert small.result(timeout=10)[0] == 200
        assert not big.done()  # the small request did not wait for all 40 texts
        assert big.result(timeout=20)[0] == 200
        assert ("small", 1) in backend.batches[:4] and max(size for _, size in backend.batches) == 2

        backend.batches.clear()
        body = json.dumps({"input": ["t"] * 400, "instruction": "gone"}).encode()
        gone = socket.create_connection((HOST, server.port))
        gone.sendall(f"POST {POST} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_until(lambda: len(backend.batches) >= 2, what="two batches")
        gone.close()
        wait_until(lambda: not request(server.port, "GET", "/health")[1]["in_flight"], what="the drop")
        time.sleep(0.2)
        assert len(backend.batches) < 20  # not the 200 batches of 2 it asked for


def test_large_request_batches_by_length_and_answers_in_its_order():
    """Split into batches longest first (little padding), the rows still come back in the request's order."""
    import asyncio

    from promptembedder.serving import DynamicBatcher

    texts = ["a" * n for n in (3, 9, 1, 7, 5, 2, 8)]
    batches = []

    def encode(batch, key):
        batches.append([len(t) for t in batch])
        return np.array([[len(t)] for t in batch], dtype=np.float32), [len(t) for t in batch]

    async def run():
        batcher = DynamicBatcher(encode, max_batch_size=3, max_wait_ms=0)
        batcher.start()
        try:
            return await batcher.submit(texts, None)
        finally:
            await batcher.close()

    vectors, counts = asyncio.run(run())
    assert batches == [[9, 8, 7], [5, 3, 2], [1]]
    assert vectors[:, 0].tolist() == counts == [3, 9, 1, 7, 5, 2, 8]


def test_client_disconnect_logs_one_info_line():
    server = ThreadServer(create_app(SleepyBackend(0.2), ServerSettings("m")))
    logger, records = logging.getLogger("uvicorn.error"), []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    level = logger.level
    with server:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            for body in (b'{"inp', b'{"input": "x"}'):  # gone while sending its body; gone while encoded
                gone = socket.create_connection((HOST, server.port))
                gone.sendall(f"POST {POST} HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n".encode() + body)
                time.sleep(0.1)
                gone.close()
                time.sleep(0.4)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    disconnects = [r for r in records if "disconnected" in r.getMessage()]
    assert len(disconnects) == 2 and all(r.levelno == logging.INFO and not r.exc_info for r in disconnects)
    assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage() for r in records]


def test_sigterm_grace_period_then_503_and_prompt_exit(tmp_path):
    """After SIGTERM a short request still finishes; one that cannot within the grace period gets a 503 in
    OpenAI's shape at its end, and the process exits right after."""
    with open(tmp_path / "server.log", "w") as log:
        process, port = launch_sleepy_server(grace_s=3.0, log=log)
        try:
            wait_healthy(port, process)

            def in_flight() -> int:
                return request(port, "GET", "/health")[1]["in_flight"]

            with ThreadPoolExecutor(2) as pool:
                long = pool.submit(request, port, "POST", POST, {"input": ["t"] * 1000}, 60)  # 50 s of work
                wait_until(lambda: in_flight() == 1, what="the long request")
                short = pool.submit(request, port, "POST", POST, {"input": ["t"] * 10}, 60)  # 1 s, taking turns
                wait_until(lambda: in_flight() == 2, what="the short request")
                sent = time.monotonic()
                process.send_signal(signal.SIGTERM)
                status, body = long.result(timeout=30)
                assert short.result(timeout=30)[0] == 200
                assert status == 503 and body["error"]["code"] == "shutting_down"
                assert process.wait(timeout=30) in (0, -signal.SIGTERM)
                assert time.monotonic() - sent < 3 + 5
        finally:
            if process.poll() is None:
                process.kill()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_serve_defaults_are_the_library_defaults():
    """The CLI spells its defaults out (it must not import FastAPI to print --help): they must not drift."""
    import inspect

    from promptembedder.cli.ship import serve as command
    from promptembedder.serving.backend import DEFAULT_PROMPT_CACHE_SIZE

    defaults = {name: p.default for name, p in inspect.signature(command).parameters.items()}
    settings, limits = ServerSettings("m"), Limits()
    assert (defaults["max_batch_size"], defaults["max_wait_ms"], defaults["max_queue"], defaults["grace_period"]) == (
        settings.max_batch_size, settings.max_wait_ms, settings.max_queue, settings.grace_period_s)
    assert (defaults["max_items"], defaults["max_text_chars"], defaults["max_body_mb"] * 1024 * 1024,
            defaults["body_timeout"]) == (limits.max_items, limits.max_text_chars, limits.max_body_bytes,
                                          limits.body_timeout)
    assert defaults["prompt_cache_size"] == DEFAULT_PROMPT_CACHE_SIZE
