"""The OpenAI-compatible server: the real openai client against a live server, errors, load, drain, batching."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from serving_utils import HOST, ThreadServer, launch_server, request, wait_healthy  # noqa: E402

from promptembedder.data.datasets import STS_INSTRUCTION  # noqa: E402
from promptembedder.models.prompt_embedder import PromptEmbedder  # noqa: E402
from promptembedder.serving import ServerSettings, create_app  # noqa: E402

TEXTS = ["A man is eating food.", "A monkey is playing drums.", "The girl is carrying a baby.",
         "It was raining heavily when we arrived at the station."]
NAME = "tiny"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    torch.manual_seed(0)
    model = PromptEmbedder(prompting_model=str(tiny_model_dir("llama")), embedding_model=str(tiny_model_dir("bert")),
                           num_soft_tokens=3, device="cpu")
    with torch.no_grad():  # a W that makes prompts count: the tiny random E barely reacts to lstsq-sized ones
        model.alignment.linear.weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("serve") / "model"
    model.save_pretrained(path)
    model = PromptEmbedder.from_pretrained(path, device="cpu")
    # two servers started together (the second one is for the SIGTERM test, which ends it)
    log = open(path.parent / "server.log", "w")  # noqa: SIM115 -- open while the servers run
    servers = [launch_server(path, "--model-name", NAME, "--max-items", "16", "--max-body-mb", "0.01",
                             "--max-wait-ms", "10", log=log), launch_server(path, "--max-batch-size", "1", log=log)]
    try:
        for process, port in servers:
            wait_healthy(port, process)
        yield model, servers[0][1], servers[1]
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
        print((path.parent / "server.log").read_text()[-3000:])  # shown by pytest when a test failed


def client(port: int):
    return openai.OpenAI(base_url=f"http://{HOST}:{port}/v1", api_key="unused", max_retries=0, timeout=60)


def test_openai_client_matches_encode(served):
    model, port, _ = served
    api = client(port)
    assert [m.id for m in api.models.list().data] == [NAME]
    got = api.embeddings.create(model=NAME, input=TEXTS, extra_body={"task": "sts-b"})  # base64 on the wire
    expected = model.encode(TEXTS, instruction=STS_INSTRUCTION)
    assert [d.index for d in got.data] == [0, 1, 2, 3] and got.usage.prompt_tokens > len(TEXTS)
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), expected, atol=2e-6)
    other = "Identify the topic of the news article."
    one = api.embeddings.create(model=NAME, input=TEXTS[0], encoding_format="float", extra_body={"instruction": other})
    # the tiny random E reacts weakly to its prompt (~4e-5), so both sides are compared tighter than that
    theirs = model.encode(TEXTS[0], instruction=other)
    assert np.abs(theirs - expected[0]).max() > 1e-5
    np.testing.assert_allclose(one.data[0].embedding, theirs, atol=2e-6)
    cut = api.embeddings.create(model=NAME, input=TEXTS, dimensions=8, extra_body={"task": "sts-b"})
    short = expected[:, :8] / np.linalg.norm(expected[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(np.array([d.embedding for d in cut.data]), short, atol=1e-5)


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"input": []}, 400, "input"),
    ({"input": ["ok", 3]}, 400, "input"),
    ({"input": ["  "]}, 400, "input"),
    ({"input": ["x"] * 17}, 400, "input"),
    ({"input": "x", "dimensions": 100000}, 400, "dimensions"),
    ({"input": "x", "task": "nope"}, 400, "task"),
    ({"input": "x", "task": "sts-b", "instruction": "y"}, 400, "instruction"),
    ({"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
    ({"input": "x", "model": "other"}, 404, "model"),
    ({"input": "x" * 20000}, 413, None),
    ({"input": {"text": "x"}}, 400, "input"),
])
def test_errors_have_openai_shape(served, body, status, param):
    got_status, payload = request(served[1], "POST", "/v1/embeddings", body)
    assert got_status == status
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["message"]
    assert payload["error"]["param"] == param


def test_errors_through_openai_client(served):
    api = client(served[1])
    with pytest.raises(openai.BadRequestError, match="empty"):
        api.embeddings.create(model=NAME, input=[])
    with pytest.raises(openai.BadRequestError, match="not a string"):
        api.embeddings.create(model=NAME, input=[[1, 2, 3]])
    with pytest.raises(openai.APIStatusError) as info:
        api.embeddings.create(model=NAME, input="word " * 5000)
    assert info.value.status_code == 413
    status, payload = request(served[1], "POST", "/v1/embeddings", b"{not json")
    assert status == 400 and payload["error"]["type"] == "invalid_request_error"


def test_load_every_response_correct(served):
    """32 concurrent clients x 20 requests: every text comes back with its own embedding, none lost or mixed."""
    model, port, _ = served
    api = client(port)
    texts = {(c, r): f"{TEXTS[(c + r) % 4][:-1]} number {c} and {r}." for c in range(32) for r in range(20)}
    expected = dict(zip(texts, model.encode(list(texts.values()), instruction=STS_INSTRUCTION), strict=True))
    before = request(port, "GET", "/health")[1]["batches"]

    def run(c: int) -> list[tuple[tuple[int, int], np.ndarray]]:
        out = []
        for r in range(20):
            got = api.embeddings.create(model=NAME, input=[texts[c, r]], extra_body={"task": "sts-b"})
            assert len(got.data) == 1
            out.append(((c, r), np.array(got.data[0].embedding)))
        return out

    with ThreadPoolExecutor(32) as pool:
        results = [item for chunk in pool.map(run, range(32)) for item in chunk]
    assert sorted(key for key, _ in results) == sorted(texts)
    for key, vector in results:
        np.testing.assert_allclose(vector, expected[key], atol=1e-5, err_msg=str(key))
    batches = request(port, "GET", "/health")[1]["batches"] - before
    assert batches < len(texts)  # concurrent requests were encoded together


def test_sigterm_drains_in_flight_requests(served):
    """A request in flight when SIGTERM arrives still gets its embeddings; then the server exits."""
    process, port = served[2]
    texts = [f"{TEXTS[i % 4]} Sentence number {i}." for i in range(400)]  # ~1 s of encoding, one at a time
    result = {}
    sender = threading.Thread(target=lambda: result.update(
        zip(("status", "body"), request(port, "POST", "/v1/embeddings", {"input": texts}, timeout=60), strict=True)))
    sender.start()
    deadline = time.monotonic() + 10
    while request(port, "GET", "/health")[1]["in_flight"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    sender.join(timeout=60)
    # uvicorn re-raises the signal once shut down, the convention for a process ended by SIGTERM
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert result["status"] == 200 and len(result["body"]["data"]) == len(texts)


class GatedBackend:
    """A backend whose encode waits for a gate: makes queue states deterministic to test."""

    dimension = 4

    def __init__(self):
        self.gate, self.busy = threading.Event(), threading.Event()

    def key(self, instruction, task, prompt_type):
        return instruction

    def encode(self, texts, key):
        self.busy.set()
        assert self.gate.wait(20)
        return np.tile(np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32), (len(texts), 1))

    def token_counts(self, texts):
        return [1] * len(texts)


def _queued(port: int, value: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if request(port, "GET", "/health")[1]["queued"] == value:
            return True
        time.sleep(0.02)
    return False


def test_full_queue_is_503_and_disconnect_frees_slot():
    backend = GatedBackend()
    settings = ServerSettings(NAME, max_batch_size=1, max_wait_ms=0, max_queue=2)
    with ThreadServer(create_app(backend, settings)) as server, ThreadPoolExecutor(3) as pool:
        port = server.port
        first = pool.submit(request, port, "POST", "/v1/embeddings", {"input": "a"})
        assert backend.busy.wait(5)  # the worker holds "a"
        second = pool.submit(request, port, "POST", "/v1/embeddings", {"input": "b", "encoding_format": "base64"})
        assert _queued(port, 1)
        body = json.dumps({"input": "c"}).encode()
        gone = socket.create_connection((HOST, port))  # a client that goes away after sending
        gone.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert _queued(port, 2)
        status, payload = request(port, "POST", "/v1/embeddings", {"input": "d"})
        assert status == 503 and payload["error"]["code"] == "overloaded"
        gone.close()
        assert _queued(port, 1)  # its slot is free again
        backend.gate.set()
        assert first.result(timeout=10)[0] == 200
        status, payload = second.result(timeout=10)
        assert status == 200
        assert np.frombuffer(base64.b64decode(payload["data"][0]["embedding"]), "<f4").tolist() == [0.5] * 4
