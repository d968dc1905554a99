"""The engine experiment's two halves, both in the project's venv (see README.md here).

`python infinity_check.py export WORK`: a PromptEmbedder (P = E = SmolLM2-135M-Instruct, K = 4, untrained W at
its least-squares start; and one with MiniLM-L6 as E, mean-pooled) saved and exported with the sts-b and scifact
instructions, and our own embeddings of TEXTS under each task written next to them (WORK/NAME/ours-TASK.npy).
`python infinity_check.py query WORK NAME PORT`: ask the engine at 127.0.0.1:PORT with the openai client for
each task's input strings (the text with the task's tokens where training put them) and print the cosines.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TEXTS = ["A man is playing a guitar.", "Two dogs run across a green field in the sun.", "Hi",
         "The mitochondria is the powerhouse of the cell, producing ATP through oxidative phosphorylation."]
MODELS = {"smollm2": dict(prompting_model="smollm2-135m", embedding_model="smollm2-135m", num_soft_tokens=4),
          "minilm": dict(prompting_model="smollm2-135m", embedding_model="minilm-l6", num_soft_tokens=4)}
TASKS = ["sts-b", "scifact"]


def export_all(work: Path) -> None:
    import torch

    from promptembedder import PromptEmbedder
    from promptembedder.export.exporter import export, task_instructions

    for name, kwargs in MODELS.items():
        torch.manual_seed(0)
        model = PromptEmbedder(device="cpu", **kwargs)
        model.save_pretrained(work / name / "model")
        instructions = task_instructions(TASKS)
        export(work / name / "model", work / name / "export", instructions)
        for task, instruction in instructions.items():
            np.save(work / name / f"ours-{task}.npy", model.encode(TEXTS, instruction=instruction))
        print(name, "exported, prompt position", model.backbone.prompt_position, "pooling", model.backbone.pooling)


def query(work: Path, name: str, port: int) -> None:
    from openai import OpenAI

    from promptembedder.export.exporter import with_prompt

    record = json.loads((work / name / "export" / "promptembedder_export.json").read_text())
    client = OpenAI(base_url=f"http://127.0.0.1:{port}", api_key="unused")
    for task in TASKS:
        inputs = [with_prompt(text, record["tokens"][task], record["prompt_position"]) for text in TEXTS]
        response = client.embeddings.create(model=str(work / name / "export-st3"), input=inputs)
        got = np.array([item.embedding for item in response.data])
        ours = np.load(work / name / f"ours-{task}.npy")
        cosines = np.sum(got * ours, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ours, axis=1)
        print(f"{name} {task}: cosine to PromptEmbedder.encode per text {np.round(cosines, 6).tolist()}, "
              f"min {cosines.min():.6f}")


if __name__ == "__main__":
    if sys.argv[1] == "export":
        export_all(Path(sys.argv[2]))
    else:
        query(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
