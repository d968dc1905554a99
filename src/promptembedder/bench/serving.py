"""`promptembedder bench serve`: throughput and latency of the server at several client concurrencies.

Rows: `encode` in-process (the ceiling without HTTP), the PromptEmbedder served with dynamic batching, the same
with batching off (max batch 1), and the bare backbone served the same way. Each server is a `promptembedder
serve` subprocess on loopback; clients are threads with one keep-alive connection each, one text per request
(the online-query case dynamic batching exists for), real STS-B test sentences.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

HOST = "127.0.0.1"


@dataclass
class ServeResult:
    variant: str
    concurrency: int
    requests: int
    seconds: float
    texts_per_s: float
    p50_ms: float | None
    p99_ms: float | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _post(connection: http.client.HTTPConnection, body: bytes) -> None:
    connection.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"server answered {response.status}: {payload[:300]!r}")


def _wait_healthy(port: int, process: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}; see {log}")
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"server did not come up in {timeout} s; see {log}")


def load_test(port: int, texts: list[str], concurrency: int, requests_per_client: int, extra: dict
              ) -> tuple[float, list[float]]:
    """Every client sends its requests back to back; returns wall time and each request's latency (s)."""
    def client(index: int) -> list[float]:
        connection = http.client.HTTPConnection(HOST, port, timeout=300)
        latencies = []
        for r in range(requests_per_client):
            body = json.dumps({"input": [texts[(index * requests_per_client + r) % len(texts)]], **extra}).encode()
            start = time.perf_counter()
            _post(connection, body)
            latencies.append(time.perf_counter() - start)
        connection.close()
        return latencies

    client(0)  # warm-up: the first request generates the instruction's prompt
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [x for chunk in pool.map(client, range(concurrency)) for x in chunk]
    return time.perf_counter() - start, latencies


def _result(variant: str, concurrency: int, seconds: float, latencies: list[float]) -> ServeResult:
    ms = np.array(latencies) * 1000
    return ServeResult(variant, concurrency, len(latencies), round(seconds, 3), round(len(latencies) / seconds, 1),
                       round(float(np.percentile(ms, 50)), 1), round(float(np.percentile(ms, 99)), 1))


def bench_encode_in_process(model, texts: list[str], instruction: str | None, count: int) -> list[ServeResult]:
    """`encode` without HTTP: one text per call (latency) and all texts in one call (batched throughput)."""
    model.encode(texts[:8], instruction=instruction)
    latencies = []
    start = time.perf_counter()
    for text in texts[:count]:
        t = time.perf_counter()
        model.encode([text], instruction=instruction)
        latencies.append(time.perf_counter() - t)
    single = _result("encode in-process, 1 text per call", 1, time.perf_counter() - start, latencies)
    start = time.perf_counter()
    model.encode(texts[:count], instruction=instruction, batch_size=64)
    seconds = time.perf_counter() - start
    batched = ServeResult("encode in-process, all texts in one call (batch 64)", 1, count, round(seconds, 3),
                          round(count / seconds, 1), None, None)
    return [single, batched]


def bench_serve(model: str | None, embedding_model: str, prompting_model: str, concurrencies: list[int],
                requests_per_client: int, max_batch_size: int, max_wait_ms: float, threads: int | None,
                output_dir: Path, console: Console) -> list[ServeResult]:
    from ..data.datasets import STS_INSTRUCTION, load_sts
    from ..models.prompt_embedder import PromptEmbedder

    output_dir.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    texts = list(dict.fromkeys(s for p in load_sts("test") for s in (p.sentence1, p.sentence2)))
    if model is None:
        model_dir = output_dir / "serve_model"
        embedder = PromptEmbedder(prompting_model=prompting_model, embedding_model=embedding_model, device="cpu")
        embedder.save_pretrained(model_dir)
    else:
        model_dir = Path(model)
        embedder = PromptEmbedder.from_pretrained(model_dir, device="cpu")
    results = bench_encode_in_process(embedder, texts, STS_INSTRUCTION, 200)
    del embedder
    variants = [
        ("served PromptEmbedder, dynamic batching", model_dir, max_batch_size, {"task": "sts-b"}),
        ("served PromptEmbedder, max batch 1", model_dir, 1, {"task": "sts-b"}),
        ("served bare backbone, dynamic batching", embedding_model, max_batch_size, {}),
    ]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    for variant, reference, batch, extra in variants:
        port = _free_port()
        log = output_dir / f"serve_{port}.log"
        with open(log, "w") as handle:
            process = subprocess.Popen(
                [sys.executable, "-m", "promptembedder", "serve", str(reference), "--host", HOST, "--port", str(port),
                 "--max-batch-size", str(batch), "--max-wait-ms", str(max_wait_ms), "--device", "cpu"],
                env=env, stdout=handle, stderr=subprocess.STDOUT)
            try:
                _wait_healthy(port, process, log)
                for concurrency in concurrencies:
                    seconds, latencies = load_test(port, texts, concurrency, requests_per_client, extra)
                    results.append(_result(variant, concurrency, seconds, latencies))
                    console.print(results[-1])
            finally:
                process.terminate()
                process.wait(timeout=60)
    _report(results, concurrencies, output_dir, console)
    return results


def _report(results: list[ServeResult], concurrencies: list[int], output_dir: Path, console: Console) -> None:
    table = Table(title="bench serve (one text per request)")
    for column in ("variant", "clients", "requests", "texts/s", "p50 ms", "p99 ms"):
        table.add_column(column)
    for r in results:
        table.add_row(r.variant, str(r.concurrency), str(r.requests), f"{r.texts_per_s:.1f}",
                      *("-" if v is None else f"{v:.1f}" for v in (r.p50_ms, r.p99_ms)))
    console.print(table)
    by = {(r.variant, r.concurrency): r for r in results}
    speedups = {c: by[("served PromptEmbedder, dynamic batching", c)].texts_per_s
                / by[("served PromptEmbedder, max batch 1", c)].texts_per_s for c in concurrencies}
    for c, s in speedups.items():
        console.print(f"dynamic batching speedup at {c} clients: {s:.2f}x")
    (output_dir / "bench_serve.json").write_text(json.dumps(
        {"results": [asdict(r) for r in results], "batching_speedup": speedups,
         "torch_threads": torch.get_num_threads()}, indent=2) + "\n")
    console.print(f"results written to {output_dir / 'bench_serve.json'}")
