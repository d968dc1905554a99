"""The markdown tables of docs/benchmarks.md ("Reading the text once") from results/*.json: every measured step of
a length pooled (medians), ratios of reading once to the full forward and to LoRA."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def pooled_runs() -> dict[int, dict[str, list[dict]]]:
    runs: dict[int, dict[str, list[dict]]] = {}
    for path in sorted(RESULTS.glob("training_*.json")):
        for block in json.loads(path.read_text())["training"]:
            for name, results in block["runs"].items():
                runs.setdefault(block["seq_len"], {}).setdefault(name, []).extend(results)
    return runs


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def training_table() -> str:
    lines = ["| tokens | prompt_on | steps | E's part: read once / full | whole step: read once / full | "
             "P's generation (of the read-once step) | P's backward | held for backward: read once / full | "
             "read-once step / LoRA's | held / LoRA's |", "|---|---|---|---|---|---|---|---|---|---|"]
    for seq_len, runs in sorted(pooled_runs().items()):
        lora = runs.get("lora")
        for prompt_on in ("query", "both"):
            fast, full = runs[f"{prompt_on} read once"], runs[f"{prompt_on} full"]
            m = {key: (median(fast, key), median(full, key)) for key in fast[0]}
            step, held, e_part = m["step_s"], m["held_for_backward_mb"], m["e_part_s"]
            generation, backward = m["p_generation_s"][0], m["p_backward_s"][0]
            versus = ("–", "–")
            if lora:
                versus = (f"{step[0] / median(lora, 'step_s'):.2f}x",
                          f"{held[0] / median(lora, 'held_for_backward_mb'):.2f}x")
            lines.append(
                f"| {seq_len} | {prompt_on} | {len(fast)} | {e_part[0]:.1f} / {e_part[1]:.1f} s = "
                f"**{e_part[0] / e_part[1]:.2f}x** | {step[0]:.1f} / {step[1]:.1f} s = **{step[0] / step[1]:.2f}x** "
                f"| {generation:.1f} s ({generation / step[0]:.0%}) | {backward:.1f} s ({backward / step[0]:.0%}) "
                f"| {held[0]:.0f} / {held[1]:.0f} MB = **{held[0] / held[1]:.2f}x** | {versus[0]} | {versus[1]} |")
        if lora:
            lines.append(f"| {seq_len} | LoRA on E | {len(lora)} | – | {median(lora, 'step_s'):.1f} s | – | – | "
                         f"{median(lora, 'held_for_backward_mb'):.0f} MB | 1.00x | 1.00x |")
    return "\n".join(lines)


def encode_table() -> str:
    lines = ["| texts | mean tokens | timing | one encode, 4 instructions | 4 encodes | ratio | max abs difference |",
             "|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("encode*.json")):
        e = json.loads(path.read_text())["encode"]
        seconds = e.get("seconds") or e["medians_s"]
        together, apart = seconds["one encode, 4 instructions"], seconds["4 encodes"]
        tokens = f"{e['mean_tokens']:.1f}" if "mean_tokens" in e else "(STS-B)"
        timing = e.get("timing", "whole encodes, one pair")
        lines.append(f"| {e['num_texts']} ({path.stem}) | {tokens} | {timing} | {together:.1f} s | {apart:.1f} s | "
                     f"**{together / apart:.2f}x** | {e['max_abs_difference']:.1e} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(training_table())
    print()
    print(encode_table())
