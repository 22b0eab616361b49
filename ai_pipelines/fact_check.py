"""Fact-checking outside the asset graph: any folder of documents, any claims.

It indexes the corpus into its own Chroma collection (named by the corpus content,
so a second run over the same documents re-embeds nothing) and runs the same
`ClaimVerifier` that the `fact_checks` asset uses. Calibration runs the verifier
on a labelled development set and picks the thresholds that decide best.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from assets.claim_verification import (
    Calibration,
    ClaimVerdict,
    ClaimVerifier,
    Features,
    Thresholds,
    decide,
    load_calibration,
    read_claims,
)
from assets.ingestion import chunk_document, load_corpus
from assets.retrieval import collection_name, sync_index

LABELS = ("supported", "refuted", "not_enough_info")


def corpus_verifier(settings: Settings, corpus: Path, use_model: bool = True, thresholds: Thresholds | None = None) -> ClaimVerifier:
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {corpus}")
    documents, quarantined = load_corpus([corpus])
    for bad in quarantined:
        print(f"skipped {bad.path}: {bad.reason}")
    if not documents:
        raise ValueError(f"no readable documents in {corpus}")
    resources = build_resources(settings)
    vector_store = resources["vector_store"]
    pipeline = resources["pipeline"]
    chunks = [c for d in documents for c in chunk_document(d, pipeline.chunk_chars, pipeline.max_chunk_chars)]
    corpus_id = hashlib.sha256("".join(sorted(d.doc_id for d in documents)).encode()).hexdigest()[:12]
    collection = collection_name(f"corpus-{corpus_id}", vector_store.embeddings.model_id)
    sync_index(vector_store, collection, chunks)
    return ClaimVerifier(vector_store, collection, model=resources["model"] if use_model else None, thresholds=thresholds)


def fact_check_corpus(settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True) -> list[ClaimVerdict]:
    claims = read_claims(claims_path)
    return corpus_verifier(settings, corpus, use_model).verify(claims)


def _macro_f1(gold: list[str], predicted: list[str]) -> float:
    scores = []
    for label in LABELS:
        tp = sum(g == p == label for g, p in zip(gold, predicted))
        fp = sum(p == label != g for g, p in zip(gold, predicted))
        fn = sum(g == label != p for g, p in zip(gold, predicted))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def calibrate(settings: Settings, corpus: Path, dev_set: Path) -> Calibration:
    """Grid-search the decision thresholds on labelled claims; features are computed once."""
    rows = [json.loads(line) for line in dev_set.read_text().splitlines() if line.strip()]
    gold = [r["label"] for r in rows]
    claims = read_claims(dev_set)
    verifier = corpus_verifier(settings, corpus, use_model=False)
    features: list[Features] = verifier.features(claims)
    grid = [round(0.80 + 0.005 * i, 3) for i in range(35)]
    best: tuple[float, float, Thresholds] | None = None
    for support, refute in itertools.product(grid, grid):
        thresholds = Thresholds(support=support, refute=refute, candidates=verifier.thresholds.candidates)
        predicted = [decide(c.id, f, thresholds).verdict for c, f in zip(claims, features)]
        f1 = _macro_f1(gold, predicted)
        accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
        if best is None or (f1, accuracy) > best[:2]:
            best = (f1, accuracy, thresholds)
    assert best is not None
    return Calibration(
        thresholds=best[2], dev_set=dev_set.name, examples=len(rows), accuracy=round(best[1], 3), macro_f1=round(best[0], 3)
    )


def evaluate(settings: Settings, corpus: Path, dev_set: Path) -> tuple[float, float]:
    """Accuracy and macro-F1 of the bundled calibration on a labelled set."""
    rows = [json.loads(line) for line in dev_set.read_text().splitlines() if line.strip()]
    verdicts = corpus_verifier(settings, corpus, use_model=False, thresholds=load_calibration().thresholds).verify(read_claims(dev_set))
    gold, predicted = [r["label"] for r in rows], [v.verdict for v in verdicts]
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold), _macro_f1(gold, predicted)
