"""A copy of an exported folder whose configs sentence-transformers 3 and transformers 4 read (what infinity-emb
0.0.78 pins): modules.json with their module paths, sentence_bert_config.json and the pooling config in their
keys (a mean-pooled export's PromptPooling becomes plain mean pooling, which averages the prompt tokens in), and
the tokenizer class and RoPE's theta where transformers 4 looks for them. Weights and tokenizer.json are the
export's own.
Usage: python st3_compat.py EXPORTED COPY
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken")


def main(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    pooling_dir = target / json.loads((target / "modules.json").read_text())[1]["path"]  # 1_PromptPooling too
    pooling = json.loads((pooling_dir / "config.json").read_text())
    mode = {"cls": "cls_token", "lasttoken": "lasttoken", "mean": "mean_tokens"}[pooling["pooling_mode"]]
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": pooling_dir.name, "type": "sentence_transformers.models.Pooling"}]
    if (target / "2_Normalize").exists():
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (target / "modules.json").write_text(json.dumps(modules, indent=2))
    max_length = json.loads((target / "promptembedder_export.json").read_text())["source"]["max_length"]
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length,
                                                                  "do_lower_case": False}))
    (pooling_dir / "config.json").write_text(json.dumps({
        "word_embedding_dimension": pooling["embedding_dimension"],
        **{f"pooling_mode_{m}": m == mode for m in MODES}, "include_prompt": True}))
    config = json.loads((target / "config.json").read_text())
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:  # transformers 4 reads rope_theta at the top (else 10000)
        config["rope_theta"] = rope["rope_theta"]
        (target / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = json.loads((target / "tokenizer_config.json").read_text())
    tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 5 writes "TokenizersBackend"
    (target / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2))
    print("written", target)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
