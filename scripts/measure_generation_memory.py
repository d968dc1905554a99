"""Run as `PYTHONPATH=src python scripts/measure_generation_memory.py`.

P's generation (Qwen2.5-0.5B's 151936 x 896 tied embeddings, 1 of its 24 layers, K=5) under bf16 autocast on CPU:
distinct storages saved for backward and fwd+bwd time, casting the frozen matrix once (new) vs at every use (old)."""
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from promptembedder.models.architectures import build_config, build_tokenizer
from promptembedder.models.generator import PromptGenerator

torch.manual_seed(0)
config = build_config("arch:qwen2.5-0.5b")
config.num_hidden_layers = 1
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
model.get_input_embeddings().requires_grad_(False)
gen = PromptGenerator(model, build_tokenizer("arch:qwen2.5-0.5b"), num_soft_tokens=5).train()

def run():
    saved = {}
    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    torch.manual_seed(1)
    t0 = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        prompt = gen("Retrieve semantically similar text.").embeddings
    prompt.float().sum().backward()
    elapsed = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    return elapsed, sum(saved.values()), prompt.detach()

for label, patch in (("new: cast once", False), ("old: cast at every use", True)):
    if patch:
        gen.low_precision = lambda w: w
    times = []
    for _ in range(2):
        t, nbytes, prompt = run()
        times.append(t)
    print(f"{label}: fwd+bwd median {statistics.median(times[-1:]):.3f} s (runs {[round(x, 3) for x in times]}), "
          f"distinct tensors saved for backward {nbytes / 2**20:.0f} MB", flush=True)
