"""Fact-checking outside the asset graph: any folder of documents, any claims (`ai-pipelines fact-check`).

It indexes the corpus into its own Chroma collection (named by the corpus content,
so a second run over the same documents re-embeds nothing) and runs the same
`ClaimVerifier` that the `fact_checks` asset uses, parsing and chunking the files as
ingestion does (the documents library). Which calibration the verifier loads is fitted by
`ai-pipelines calibrate` (ai_pipelines/calibration.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from resources.documents.chunking import chunk_document
from resources.documents.parsing import load_corpus
from resources.retrieval.index_sync import collection_name, sync_index
from resources.verification.claim_verification import (
    Calibration,
    ClaimExplanation,
    ClaimVerdict,
    ClaimVerifier,
    read_claims,
    read_claims_lenient,
)


def corpus_verifier(
    settings: Settings, corpus: Path, use_model: bool = True, calibration: Calibration | None = None
) -> ClaimVerifier:
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
    llm = resources["model"].open_session() if use_model else None  # the CLI is no Dagster run
    return ClaimVerifier(vector_store, collection, llm=llm, calibration=calibration)


def fact_check_corpus(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> list[ClaimVerdict]:
    """Verdicts for a claims file; a malformed line raises an error naming it."""
    return corpus_verifier(settings, corpus, use_model).verify(read_claims(claims_path))


def fact_check_lenient(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> tuple[list[ClaimVerdict], list[str]]:
    """Verdicts for every well-formed claim, and one error per malformed line: one bad line never stops the others."""
    claims, errors = read_claims_lenient(claims_path)
    return (corpus_verifier(settings, corpus, use_model).verify(claims) if claims else []), errors


def explain_lenient(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> tuple[list[ClaimExplanation], list[str]]:
    """As `fact_check_lenient`, each verdict inside the explanation of how it was reached."""
    claims, errors = read_claims_lenient(claims_path)
    return (corpus_verifier(settings, corpus, use_model).explain(claims) if claims else []), errors
