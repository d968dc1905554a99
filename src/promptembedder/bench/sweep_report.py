"""The training-cost sweep's table (sweep.md), from its report (sweep.json): PromptEmbedder against LoRA per batch and
GradCache configuration, the steady state, the diversity term's cost and where a step goes."""

from __future__ import annotations


def _cell(record: dict | None) -> str:
    if record is None:
        return "–"
    if "error" in record:
        return "OOM" if record["error"].startswith("out of memory") else "failed"
    return f"{record['step_s']:.3f} s, {record['peak_memory_mb'] / 1024:.1f} GB"


def _pair_rows(steps: dict, frozen: dict, configs: list, pe: str, base: str, label: str, path: str) -> list[str]:
    rows = []
    for batch, chunk in configs:
        a, b = steps.get((pe, batch, chunk, "cold")), steps.get((base, batch, chunk, "cold"))
        warm = steps.get((pe, batch, chunk, "warm"))
        if a is None and b is None:
            continue
        ok = a is not None and b is not None and "error" not in a and "error" not in b
        ratio = f"{a['step_s'] / b['step_s']:.2f}x" if ok else "–"
        memory = f"{a['peak_memory_mb'] / b['peak_memory_mb']:.2f}x" if ok else "–"
        above = "–"
        if ok and pe in frozen and base in frozen:
            above = f"{(a['peak_memory_mb'] - frozen[pe]) / (b['peak_memory_mb'] - frozen[base]):.2f}x"
        steady_ok = warm is not None and b is not None and "error" not in warm and "error" not in b
        steady = f"{warm['step_s'] / b['step_s']:.2f}x" if steady_ok else "–"
        rows.append(f"| {batch} | {chunk or '–'} | {label} | {path} | {ratio} | {memory} | {above} | {_cell(b)} "
                    f"| {_cell(a)} | {_cell(warm)} | {steady} |")
    return rows


def _diversity_rows(steps: dict, configs: list) -> list[str]:
    """What the prompt-diversity term adds to a PE-query step (cold document cache), where both were measured."""
    rows = []
    for batch, chunk in configs:
        plain = steps.get(("promptembedder-query", batch, chunk, "cold"))
        diverse = steps.get(("promptembedder-query-diversity", batch, chunk, "cold"))
        if plain is None or diverse is None:
            continue
        ok = "error" not in plain and "error" not in diverse
        ratios = [f"{diverse[k] / plain[k]:.2f}x" if ok else "–" for k in ("step_s", "peak_memory_mb")]
        rows.append(f"| {batch} | {chunk or '–'} | {_cell(plain)} | {_cell(diverse)} | {' | '.join(ratios)} |")
    if not rows:
        return []
    return ["", "The prompt-diversity term (`prompt_diversity`: each step also generates P's prompts for 3 other "
            "instructions) against the same PE-query step without it:", "",
            "| batch | GradCache chunk | PE-query step, peak | with the term | step ratio | memory ratio |",
            "|---|---|---|---|---|---|", *rows]


def sweep_markdown(report: dict) -> str:
    """The issue's table: PromptEmbedder (query) vs LoRA per configuration (and both with E checkpointed, where
    measured), the steady state, the phases."""
    records, settings = report["records"], report["settings"]
    steps = {(r["method"], r["batch_size"], r["grad_cache_chunk_size"], r["doc_cache"]): r
             for r in records if r["kind"] == "step"}
    frozen = {r["method"]: r["frozen_e_weights_mb"] for r in records if r["kind"] == "model"}
    machine = report["machine"]
    lines = [f"# Training-cost sweep: E = {settings['embedding_model']}, P = {settings['prompting_model']}",
             "", f"{machine.get('gpu', machine['device'])}, torch {machine['libraries']['torch']}, "
             f"{settings['seq_len']} tokens per text, triplets, {settings['warmup']} warm-up + {settings['steps']} "
             f"timed steps (median), memory = {report['memory_measure']}, autocast {settings['autocast']}.", "",
             "| batch | GradCache chunk | E checkpointed | E's path | PE-query step vs LoRA | memory vs LoRA | memory "
             "above E's weights vs LoRA | LoRA step, peak | PE-query step, peak | PE-query steady state (docs cached) "
             "| steady vs LoRA |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    # A checkpointed E always runs the full forward (backbone.can_read_once).
    for pe, base, label, path in (("promptembedder-query", "lora", "no", "read once"),
                                  ("promptembedder-query-no-read-once", "lora", "no", "full"),
                                  ("promptembedder-query+gc", "lora+gc", "yes", "full")):
        lines += _pair_rows(steps, frozen, settings["configs"], pe, base, label, path)
    lines += _diversity_rows(steps, settings["configs"])
    for phases in (r for r in records if r["kind"] == "phases" and "phases_s" in r):
        lines += ["", f"Where a batch-{phases['batch_size']} {phases['method']} step goes (synchronised, median):",
                  "", "| phase | time |", "|---|---|"]
        lines += [f"| {name} | {seconds:.4f} s |" for name, seconds in phases["phases_s"].items()]
        total = sum(phases["phases_s"].values())
        lines += ["", f"P's generation: {phases['phases_s']['generation'] / total:.0%} of the step."]
        if phases.get("memory"):
            lines += ["", "Allocated memory during that step: " + ", ".join(
                f"{k} {v / 1024:.2f} GB" for k, v in phases["memory"].items()) + "."]
    if report["failures"]:
        lines += ["", "Failed methods: " + ", ".join(report["failures"]) + " (see their .log files)."]
    return "\n".join(lines) + "\n"
