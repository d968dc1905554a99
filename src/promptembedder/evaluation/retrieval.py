"""Retrieval as MTEB scores it: rank the whole corpus per query by cosine, keep the top 1,000, nDCG@10 (pytrec_eval)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..data.task_sets import RetrievalData
from ..models.embedder import Embedder
from .encoding import encode_texts, normalize_rows

TOP_K = 1000
#: pytrec_eval measure -> our key; nDCG@10 is the main score, the others are reported alongside.
MEASURES = {"ndcg_cut_10": "ndcg_at_10", "recall_100": "recall_at_100", "recip_rank": "mrr"}


def retrieval_scores(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
                     ) -> dict[str, float]:
    """nDCG@10, recall@100 and MRR (x100) averaged over the judged queries, computed by pytrec_eval."""
    import pytrec_eval  # here: training imports this package (task names) and needs no pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(d) for q, d in qrels.items()}, {"ndcg_cut.10", "recall.100",
                                                                                       "recip_rank"})
    per_query = evaluator.evaluate({q: dict(d) for q, d in run.items()})
    # A judged query with no ranking scores 0, as in MTEB (pytrec_eval would silently drop it).
    scores = {key: 100 * sum(per_query.get(q, {}).get(m, 0.0) for q in qrels) / len(qrels)
              for m, key in MEASURES.items()}
    return {"main_score": scores["ndcg_at_10"], **scores}


def rank(query_embeddings: np.ndarray, doc_embeddings: np.ndarray, query_ids: list[str], doc_ids: list[str],
         top_k: int = TOP_K) -> dict[str, dict[str, float]]:
    """The top ``top_k`` documents per query by cosine similarity, as a pytrec_eval run."""
    scores = normalize_rows(query_embeddings) @ normalize_rows(doc_embeddings).T
    k = min(top_k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(query_ids)}


def evaluate_retrieval(model: Embedder, data: RetrievalData, instruction: str | None, batch_size: int = 64,
                       show_progress_bar: bool | None = None, document_prompt_type: str = "document",
                       top_k: int = TOP_K) -> dict[str, float]:
    """Queries get the task instruction (prompt_type "query"); documents get prompt_type "document" and no
    instruction (asymmetric, as MTEB), or with ``document_prompt_type="query"`` the query's treatment (symmetric)."""
    document_instruction = instruction if document_prompt_type == "query" else None
    query_ids, doc_ids = list(data.queries), list(data.corpus)
    queries = encode_texts(model, [data.queries[q] for q in query_ids], instruction, "query", batch_size,
                           show_progress_bar)
    docs = encode_texts(model, [data.corpus[d] for d in doc_ids], document_instruction, document_prompt_type,
                        batch_size, show_progress_bar)
    run = rank(queries, docs, query_ids, doc_ids, top_k)
    return {**retrieval_scores(run, data.qrels), "num_queries": len(query_ids), "num_documents": len(doc_ids)}
