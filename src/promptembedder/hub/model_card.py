"""Model cards (README.md) for saved and exported PromptEmbedders: what is inside and how to call it.

One writer for both folders, so a model shared either way says the same things: P, E, K, pooling, the
training data and scores the trainer left next to it, and each instruction with the text its prompt decodes to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..models.config import PromptEmbedderConfig

README = "README.md"
SAVED_CARD_MARK = "library_name: promptembedder"


@dataclass
class CompiledPrompt:
    """One instruction as an exported model serves it: a name, the instruction, its K tokens, their reading."""

    name: str
    instruction: str
    token_string: str
    decoded: str


def training_record(model_dir: str | Path) -> dict:
    """What the trainer wrote next to a saved model (`OUTPUT/best` or `OUTPUT/final`): its config and summary."""
    parent = Path(model_dir).resolve().parent
    record = {}
    for key, name in (("training", "training_config.json"), ("summary", "train_summary.json")):
        path = parent / name
        if path.exists():
            try:
                record[key] = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # a card is informative only: a damaged side file must not stop a save or export
    return record


def _model_lines(config: PromptEmbedderConfig, record: dict) -> list[str]:
    training = record.get("training", {})
    summary = record.get("summary", {})
    lines = [
        "| | |", "|---|---|",
        f"| Prompting LLM (P) | `{config.prompting_model}` ({config.prompting_trainable}) |",
        f"| Embedding LLM (E, frozen) | `{config.embedding_model}` |",
        f"| Alignment (W) | {'trained' if config.train_alignment else 'frozen at its least-squares start'} |",
        f"| Soft tokens (K) | {config.num_soft_tokens} |",
        f"| Pooling | {config.pooling} (soft prompt left out of the pool) |",
        f"| Normalised | {config.normalize} |",
        f"| Prompt on | {config.prompt_on} ({'documents too' if config.prompt_on == 'both' else 'queries only'}) |",
        f"| Max length | {config.max_length} tokens, the prompt included |",
    ]
    if training.get("train_data"):
        lines.append(f"| Training data | {', '.join(map(str, training['train_data']))} |")
    if summary.get("steps"):
        lines.append(f"| Training steps | {summary['steps']} |")
    metric = summary.get("dev_metric") or "sts-b spearman"  # runs from before dev_metric selected on STS-B
    for which in ("best", "final"):
        value = summary.get(f"{which}_dev_score", summary.get(f"{which}_dev_spearman"))  # the older key
        if value is not None:
            lines.append(f"| Dev {metric} ({which}) | {value:.2f} |")
    return lines


def saved_model_card(config: PromptEmbedderConfig, model_dir: str | Path) -> str:
    """The card of a `save_pretrained` folder: loads with promptembedder; `promptembedder export` makes it portable."""
    lines = [
        "---", SAVED_CARD_MARK, "tags: [sentence-embeddings, soft-prompts, promptembedder]", "---", "",
        "# PromptEmbedder", "",
        "A trainable Prompting LLM (P) writes K soft tokens from an instruction; a linear alignment (W) maps them "
        "into the input space of a frozen Embedding LLM (E), which embeds the text behind them.", "",
        *_model_lines(config, training_record(model_dir)), "",
        "## Use", "", "```python", "from promptembedder import PromptEmbedder", "",
        f'model = PromptEmbedder.from_pretrained("{Path(model_dir).name}")',
        'embeddings = model.encode(["A man plays a guitar."], instruction="Retrieve semantically similar text.")',
        "```", "",
        "Portable copy (plain Hugging Face checkpoint + sentence-transformers, no P needed): "
        f"`promptembedder export {Path(model_dir).name} OUT --tasks sts-b`. "
        f"Server: `promptembedder serve {Path(model_dir).name}`.", "",
    ]
    return "\n".join(lines)


def write_saved_model_card(config: PromptEmbedderConfig, directory: str | Path) -> None:
    """Write README.md into a save_pretrained folder, unless one is there that we did not write."""
    path = Path(directory) / README
    if path.exists() and SAVED_CARD_MARK not in path.read_text(encoding="utf-8", errors="replace"):
        return
    path.write_text(saved_model_card(config, directory), encoding="utf-8")


def _cell(text: str) -> str:
    """Text for a markdown table cell: a '|' would end the cell."""
    return text.replace("|", "\\|")


def exported_model_card(config: PromptEmbedderConfig, model_dir: str | Path | None, prompts: list[CompiledPrompt],
                        trust_remote_code: bool, folder: str = "OUT", position: str = "prefix",
                        pooling: str = "mean") -> str:
    """The card of an exported folder: every task's prompt tokens, what they decode to, and how to call it."""
    remote = ", trust_remote_code=True" if trust_remote_code else ""
    load = f'SentenceTransformer("{folder}"{remote})'
    first = prompts[0].name if prompts else "NAME"
    tokens = prompts[0].token_string if prompts else "TOKENS"
    if position == "suffix":
        where = ("Append a task's tokens to the text (before any special token the tokenizer adds at the end); "
                 "sentence-transformers does it with `prompt_name`, through the chat template in "
                 "`sentence_bert_config.json`'s `processing_kwargs` (the tokenizer's own chat template is untouched).")
        plain = f'text + "{tokens}"'
    else:
        where = "Prepend a task's tokens to the text (sentence-transformers does it with `prompt_name`)."
        plain = f'"{tokens}" + text'
    lines = [
        "---", "library_name: sentence-transformers",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, promptembedder]", "---", "",
        "# PromptEmbedder (exported)", "",
        "A frozen Embedding LLM with each instruction's soft prompt compiled into K new tokens of its vocabulary: "
        f"the Prompting LLM is not needed any more. {where}", "",
        *_model_lines(config, training_record(model_dir) if model_dir else {}), "",
        "## Tasks", "",
        "| prompt_name | instruction | tokens | prompt decodes to |", "|---|---|---|---|",
        *(f"| `{p.name}` | {_cell(p.instruction) or '(none)'} | `{p.token_string}` | {_cell(repr(p.decoded))} |"
          for p in prompts), "",
        "## Use", "", "```python", "from sentence_transformers import SentenceTransformer", "",
        f"model = {load}",
        f'embeddings = model.encode(["A man plays a guitar."], prompt_name="{first}")',
        "```", "",
        f"Anything that embeds plain strings with this folder (transformers, an embeddings server) embeds `{plain}` "
        f"for task `{first}`, with {pooling} pooling and L2 normalisation.", "",
    ]
    if any(p.name == "query" for p in prompts):
        lines += ["`model.encode_query(texts)` and `model.encode_document(texts)` without a `prompt_name` use the "
                  "`query` and `document` prompts, as PromptEmbedder's do: the default instruction's prompt "
                  "(documents only when the model prompts them).", ""]
    if config.prompt_on == "query":
        lines += ["Documents get no prompt (the model was trained with `prompt_on='query'`): encode them without "
                  "`prompt_name`.", ""]
    if trust_remote_code:
        lines += ["`trust_remote_code=True` loads `prompt_pooling.py` (in this folder): mean pooling that leaves "
                  "the prompt tokens out but keeps the leading special token, as PromptEmbedder pools. Engines "
                  "that ignore it (TEI, vLLM) average the prompt tokens in too and give different embeddings "
                  "(cosine about 0.90 to these on MiniLM): serve this folder with sentence-transformers or "
                  "`promptembedder serve` instead.", ""]
    else:
        lines += ["Engines that serve plain checkpoints (TEI, vLLM, infinity) give the same embeddings when the "
                  f"task's tokens are {'appended to' if position == 'suffix' else 'prepended to'} each text.", ""]
        if position == "suffix":
            lines += ["Such an engine truncates a text longer than the max length at its end, the appended tokens "
                      "with it: truncate texts to the max length less K tokens first (sentence-transformers keeps "
                      "the prompt, as PromptEmbedder does).", ""]
    return "\n".join(lines)
