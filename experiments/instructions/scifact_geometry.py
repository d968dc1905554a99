"""Why SciFact collapses on the full corpus for PromptEmbedder: the geometry of its claims and abstracts.

On a fixed sample of SciFact's test set (all 300 claims; the abstracts they cite and 700 others drawn with
random.Random(0)), read as evaluation reads them, each model's: mean cosine between different abstracts and
between different claims (how much of every embedding is one shared direction), the claim-to-cited-abstract cosine
against claim-to-other (the gap, and the gap in standard deviations of the claim-to-abstract cosines), nDCG@10 on the
sample, and hubness (the share of all top-10 slots held by the 10 abstracts retrieved most often).

    OMP_NUM_THREADS=1 python experiments/instructions/scifact_geometry.py runs/instructions300/pt@gemma3-270m/final \
        --output experiments/instructions/scifact_geometry.json
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
from scifact_documents import score_each

from promptembedder.data.task_sets import RetrievalData
from promptembedder.evaluation.encoding import encode_texts, normalize_rows
from promptembedder.evaluation.retrieval import rank, retrieval_scores

OTHERS = 700


def sample(data: RetrievalData) -> RetrievalData:
    cited = sorted({d for docs in data.qrels.values() for d in docs})
    rest = sorted(set(data.corpus) - set(cited))
    keep = cited + random.Random(0).sample(rest, OTHERS)
    return RetrievalData(data.queries, {d: data.corpus[d] for d in keep}, data.qrels)


def off_diagonal_mean(vectors: np.ndarray) -> float:
    sims = vectors @ vectors.T
    n = len(vectors)
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))


def geometry(model, data: RetrievalData, instruction: str, document_prompt_type: str) -> dict:
    query_ids, doc_ids = [q for q in data.queries if q in data.qrels], list(data.corpus)
    queries = normalize_rows(encode_texts(model, [data.queries[q] for q in query_ids], instruction, "query"))
    document_instruction = instruction if document_prompt_type == "query" else None
    docs = normalize_rows(encode_texts(model, [data.corpus[d] for d in doc_ids], document_instruction,
                                       document_prompt_type))
    sims = queries @ docs.T
    column = {d: j for j, d in enumerate(doc_ids)}
    cited = np.zeros_like(sims, dtype=bool)
    for i, q in enumerate(query_ids):
        for d in data.qrels[q]:
            cited[i, column[d]] = True
    top10 = np.argsort(-sims, axis=1)[:, :10]
    counts = Counter(top10.ravel().tolist())
    run = rank(queries, docs, query_ids, doc_ids)
    return {
        "documents": len(doc_ids), "queries": len(query_ids),
        "cosine_between_documents": off_diagonal_mean(docs), "cosine_between_queries": off_diagonal_mean(queries),
        "cosine_query_to_cited": float(sims[cited].mean()), "cosine_query_to_other": float(sims[~cited].mean()),
        "gap_in_sd": float((sims[cited].mean() - sims[~cited].mean()) / sims.std()),
        "ndcg_at_10_sample": retrieval_scores(run, {q: data.qrels[q] for q in query_ids})["ndcg_at_10"],
        "top10_share_of_10_hubs": sum(c for _, c in counts.most_common(10)) / top10.size,
    }


if __name__ == "__main__":
    score_each(__doc__.split("\n\n")[0], sample,
               lambda model, spec, data: geometry(model, data, spec.instruction, spec.document_prompt_type))
