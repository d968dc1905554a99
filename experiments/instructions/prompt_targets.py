"""The prompt table's prompts as targets for P, on the NLI wordings: which prompt each wording should get
(`table_targets`), how far P's prompts are from them (`distill_error`), and which direction P's prompt for a wording
leans to (`routing`, and `fallback_routing` for a table). Used by `from_table.py` (fit, distillation) and
`anchored.py` (the table error as a term of the loss)."""

from __future__ import annotations

import torch
from nli_wordings import wordings
from run import NLI_TASKS

from promptembedder.data.instructions import training_instructions
from promptembedder.models.prompt_embedder import PromptEmbedder
from promptembedder.models.prompt_table import PromptTableEmbedder


def table_targets(table: PromptTableEmbedder) -> tuple[list[str | None], torch.Tensor]:
    """Each NLI training wording with its table row (K, d_E): its own row, or, in a table trained with one wording
    per task (`onewording`), the row of its task's first wording; and no instruction (how documents are read in
    `plaindocs` training and by nli-follow's plain reading) with the table's mean row, which the table reads them
    with."""
    texts, rows = [], []
    for task in NLI_TASKS:
        trained = training_instructions(task)
        for text in trained:
            key = text if text in table.row else trained[0]
            if key not in table.row:
                raise SystemExit(f"the table has no row for {task!r}: train it on the NLI tasks (nlionly)")
            texts.append(text)
            rows.append(table.prompt_for(key))
    return [*texts, None], torch.stack([*rows, table.prompt_for(None)]).detach()


def training_prompts(model: PromptEmbedder, texts: list[str | None]) -> torch.Tensor:
    """W(P(text)) (n, K, d_E) for each instruction as training makes them: one batched generation, with gradient,
    Gumbel draws unless the row has none. What regression (`from_table.distill_to_table`) and the anchor term
    (`anchored.AnchoredLoss`) compare with `table_targets`."""
    read = [model.config.instruction_text(text) for text in texts]
    return model.alignment(torch.stack([p.embeddings for p in model.generator.generate(read)]))


def inference_prompts(model: PromptEmbedder, texts: list[str | None]) -> torch.Tensor:
    """`training_prompts`' counterpart as inference makes them (`soft_prompt`: no Gumbel draws), for the record."""
    return torch.stack([model.soft_prompt(text) for text in texts])


def routed(direction_of) -> dict:
    """Per group of `nli_wordings`' wordings (trained, held-out, new pairs), the share whose direction, as
    `direction_of(text)` gives it (0 entailment, 1 contradiction), is the wording's own."""
    out = {}
    for group, pairs in wordings().items():
        right = [direction_of(text) == i for pair in pairs.values() for i, text in enumerate(pair)]
        out[group] = sum(right) / len(right)
    return out


@torch.no_grad()
def routing(model: PromptEmbedder, table: PromptTableEmbedder) -> dict[str, dict]:
    """Is P's prompt for each wording nearer (cosine) to its own direction than to the other's? `table`: the
    directions are the table's prompts (the mean row of each task's wordings); `own`: P's own prompts for each task's
    first training wording (`onewording`'s; those two are routed right by construction), for a P trained
    contrastively, not fitted to the table. The share so routed per group (`routed`): what P carries to a wording
    before E reads anything."""
    texts, targets = table_targets(table)
    half = (len(texts) - 1) // 2
    centres = {"table": torch.stack([targets[:half].mean(0).flatten(), targets[half:-1].mean(0).flatten()]),
               "own": torch.stack([model.soft_prompt(training_instructions(task)[0]).flatten() for task in NLI_TASKS])}
    prompts = {text: torch.nn.functional.normalize(model.soft_prompt(text).flatten().double(), dim=0)
               for pairs in wordings().values() for pair in pairs.values() for text in pair}
    out = {}
    for name, centre in centres.items():
        centre = torch.nn.functional.normalize(centre.double(), dim=-1)
        out[name] = routed(lambda text, centre=centre: int((centre @ prompts[text]).argmax()))
    return out


def distill_error(prompts: torch.Tensor, targets: torch.Tensor, error: str = "split") -> torch.Tensor:
    """The relative squared error of the prompts (n + 1, K, d_E) (`plain`); `split`: that of the wordings' prompts
    about their mean, plus that of the mean and of the no-instruction prompt (the last); `spread`: the first alone.
    The table's rows share most of their norm (cosine 0.93 between a onewording table's two rows), so the plain error
    is met by the shared part and hardly sees what tells the directions apart."""
    if error == "plain":
        return (prompts - targets).pow(2).sum() / targets.pow(2).sum()
    spread, target_spread = prompts[:-1] - prompts[:-1].mean(0), targets[:-1] - targets[:-1].mean(0)
    common, target_common = torch.stack([prompts[:-1].mean(0), prompts[-1]]), torch.stack([targets[:-1].mean(0),
                                                                                           targets[-1]])
    spread_error = (spread - target_spread).pow(2).sum() / target_spread.pow(2).sum()
    if error == "spread":
        return spread_error
    return spread_error + (common - target_common).pow(2).sum() / target_common.pow(2).sum()


def fallback_routing(table: PromptTableEmbedder) -> dict:
    """`routing` for a table: the share of wordings whose fallback row is of the wording's own direction."""
    direction = {text: i for i, task in enumerate(NLI_TASKS) for text in training_instructions(task)}
    return routed(lambda text: direction[table.config.instructions[table.nearest(text)]])
