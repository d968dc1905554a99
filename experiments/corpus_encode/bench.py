"""Texts per second of `promptembedder encode --output-dir` on CPU: one process against two (torchrun, gloo).

Reads the first N SciFact abstracts (../shared/data/scifact/corpus.jsonl, BEIR layout) and encodes them with
MiniLM-L6 (a bare backbone; every embedder goes through the same corpus code), shards of 250 rows. Each setting
runs in a fresh output folder; the rate is N / the command's wall time (model loading included) and the rate the
progress bar reports per rank (encoding only). Usage: python experiments/corpus_encode/bench.py [N] [MODEL]
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "data" / "scifact" / "corpus.jsonl"
SETTINGS = (("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2), ("2 processes, 1 thread each", 2, 1))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    model = sys.argv[2] if len(sys.argv) > 2 else "minilm-l6"
    work = Path(tempfile.mkdtemp(prefix="corpus_bench_"))
    subset = work / "corpus.jsonl"
    with CORPUS.open() as source, subset.open("w") as target:
        target.writelines(itertools.islice(source, n))
    print("| setting | wall s | texts/s (wall) | texts/s per rank (progress bar) |\n|---|---|---|---|")
    for name, processes, threads in SETTINGS:
        out = work / f"out_{processes}_{threads}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                   "-m", "promptembedder", "encode", model, "-i", str(subset), "--output-dir", str(out),
                   "--id-column", "_id", "--prompt-type", "document", "--shard-size", "250", "--device", "cpu"]
        start = time.perf_counter()
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        final = dict(re.findall(r"(Encoding[^:]*): \d+ texts \[[^,]+, *([\d.]+) texts/s", proc.stderr))
        rates = [final[label] for label in sorted(final)]  # the last update of each rank's bar
        print(f"| {name} | {wall:.1f} | {n / wall:.1f} | {', '.join(rates)} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
