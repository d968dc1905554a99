"""Read once against the full forward on CPU (issue 27): E's part of a training step, the whole step, P's share of it,
the memory a step holds for backward, and LoRA on E at the same batch; and encode under several instructions.

One process, models built once, one thread; the paths alternate step by step (fast, full, fast, ...) so that drift on a
shared machine hits both alike; medians over the repeats. Documents are embedded afresh every step (the first epoch's
cost: with `prompt_on='query'` later epochs take them from the cache). See README.md here for the commands.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from promptembedder import PromptEmbedder
from promptembedder.bench.training import fixed_length_examples
from promptembedder.data.datasets import load_sts
from promptembedder.training import Trainer, TrainingConfig
from promptembedder.training.losses import split_batch

INSTRUCTIONS = ["Retrieve semantically similar text.", "Given a claim, find documents that refute the claim.",
                "Classify the intent of the banking query.", "Given a premise, retrieve a hypothesis that is entailed "
                "by the premise."]


@contextmanager
def held_for_backward(model: torch.nn.Module, sink: list[int]):
    """Bytes of the distinct tensors autograd saves for backward inside the block, weights left out: the activation
    memory a step holds above weights and optimizer state."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield
    sink.append(sum(seen.values()))


def promptembedder_step(trainer: Trainer, batch) -> dict[str, float]:
    """One step in phases: P's generation (+ W), E's prompted side forward, documents without a graph (prompt_on
    query), E's backward to the prompt, P's and W's backward, the optimizer."""
    model = trainer.model
    instruction, queries, documents = split_batch(batch)
    marks = [time.perf_counter()]
    context, _ = model.training_context(trainer.wrapped, instruction)
    marks.append(time.perf_counter())
    leaf, held = context.detach().requires_grad_(), []
    with held_for_backward(model, held):
        if model.document_side_trainable:
            both = model.embed_in_context(trainer.wrapped, queries + documents, "query", leaf, instruction)
            q, docs = both[: len(queries)], both[len(queries) :]
        else:
            q = model.embed_in_context(trainer.wrapped, queries, "query", leaf, instruction)
    marks.append(time.perf_counter())
    if not model.document_side_trainable:
        trainer.documents.vectors.clear()  # cold: the first epoch
        docs = trainer.documents(documents, instruction)
    marks.append(time.perf_counter())
    trainer.loss.info_nce(q, docs, len(batch)).backward()
    marks.append(time.perf_counter())
    context.backward(leaf.grad)
    marks.append(time.perf_counter())
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    d = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"step_s": marks[-1] - marks[0], "e_part_s": d[1] + d[3], "p_generation_s": d[0], "p_backward_s": d[4],
            "documents_no_graph_s": d[2], "held_for_backward_mb": held[0] / 2**20}


def lora_step(trainer: Trainer, batch) -> dict[str, float]:
    """LoRA on E: every text forward and backward through E (its document side trains too)."""
    start, held = time.perf_counter(), []
    with held_for_backward(trainer.model, held):
        loss = trainer.loss(batch)
    loss.backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    step = time.perf_counter() - start
    return {"step_s": step, "e_part_s": step, "held_for_backward_mb": held[0] / 2**20}


def trainer_for(method: str, args, seq_len: int, out: Path, examples) -> Trainer:
    config = TrainingConfig(method=method, prompting_model=args.prompting_model, embedding_model=args.embedding_model,
                            batch_size=args.batch_size, max_length=seq_len + 16, output_dir=str(out / method),
                            do_eval=False, save_model=False, show_progress_bar=False, device="cpu", overwrite=True,
                            prompt_on="query")
    trainer = Trainer(config, examples=examples)
    trainer.model.train()
    return trainer


def measure_training(args, seq_len: int, out: Path) -> dict:
    examples = fixed_length_examples(args.batch_size * (args.repeats + 1), seq_len)
    batches = [examples[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.repeats + 1)]
    batches[0] = batches[0][:2]  # the warm-up: first calls of every path, on a small batch
    pe = trainer_for("promptembedder", args, seq_len, out, examples)
    lora = trainer_for("lora", args, seq_len, out, examples) if args.lora else None
    runs: dict[str, list[dict]] = {}
    for index, batch in enumerate(batches):
        for prompt_on in args.prompt_on:
            pe.model.config.prompt_on = prompt_on
            for read_once in (True, False):
                pe.model.backbone.read_once = read_once
                result = promptembedder_step(pe, batch)
                if index:
                    runs.setdefault(f"{prompt_on} {'read once' if read_once else 'full'}", []).append(result)
                print(seq_len, index, prompt_on, read_once, json.dumps(result), flush=True)
        if lora is not None:
            result = lora_step(lora, batch)
            if index:
                runs.setdefault("lora", []).append(result)
            print(seq_len, index, "lora", json.dumps(result), flush=True)
    medians = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    return {"seq_len": seq_len, "medians": medians, "runs": runs}


def measure_encode(args) -> dict:
    """1,000 texts under 4 instructions, encode's batches (length-sorted, 32 texts): per batch, the texts under all
    4 instructions at once (`embed_instructions`, what `encode(texts, instruction=[...])` runs) and under each
    instruction apart (`embed`, what 4 encodes run), the order alternating from batch to batch so that the
    machine's drift hits both alike; the times summed over the batches."""
    model = PromptEmbedder(prompting_model=args.prompting_model, embedding_model=args.embedding_model, device="cpu")
    texts = list(dict.fromkeys(s for p in load_sts("test") for s in (p.sentence1, p.sentence2)))[: args.num_texts]
    if args.encode_seq_len:  # longer texts: SNLI premises stretched to this many words (as the training texts)
        texts = list(dict.fromkeys(e.query for e in fixed_length_examples(args.num_texts * 2, args.encode_seq_len)))
        texts = texts[: args.num_texts]
    texts.sort(key=len, reverse=True)
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    times = {"one encode, 4 instructions": 0.0, "4 encodes": 0.0}
    difference = 0.0
    model.eval()
    with torch.inference_mode():
        for instruction in INSTRUCTIONS:  # P's prompts, cached at inference, and a warm-up
            model.embed(texts[:2], instruction)
        model.embed_instructions(texts[:2], INSTRUCTIONS)
        for index, batch in enumerate(batches):
            results = {}
            for name in sorted(times, reverse=bool(index % 2)):
                start = time.perf_counter()
                results[name] = (model.embed_instructions(batch, INSTRUCTIONS) if name.startswith("one") else
                                 torch.stack([model.embed(batch, i) for i in INSTRUCTIONS]))
                times[name] += time.perf_counter() - start
            difference = max(difference, float((results["one encode, 4 instructions"] - results["4 encodes"])
                                               .abs().max()))
            if index % 8 == 0:
                print("encode", index, len(batches), times, flush=True)
    tokens = model.backbone.tokenize(texts)["attention_mask"].sum(1).float().mean().item()
    return {"num_texts": len(texts), "mean_tokens": tokens, "seconds": times, "max_abs_difference": difference,
            "ratio": times["one encode, 4 instructions"] / times["4 encodes"], "timing": "per batch, alternating"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedding-model", default="gemma3-270m")
    parser.add_argument("--prompting-model", default="smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[48, 128])
    parser.add_argument("--prompt-on", nargs="+", default=["query", "both"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-lora", dest="lora", action="store_false")
    parser.add_argument("--encode", action="store_true", help="the multi-instruction encode instead of training")
    parser.add_argument("--num-texts", type=int, default=1000)
    parser.add_argument("--encode-seq-len", type=int, default=0, help="texts of this many words instead of STS-B's")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    scratch = args.output.parent / "scratch"
    report = {"settings": {k: str(v) for k, v in vars(args).items()}, "threads": torch.get_num_threads()}
    if args.encode:
        report["encode"] = measure_encode(args)
    else:
        report["training"] = [measure_training(args, seq_len, scratch) for seq_len in args.seq_lens]
    args.output.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
