"""Fact-checking outside the asset graph: any folder of documents, any claims.

It indexes the corpus into its own Chroma collection (named by the corpus content,
so a second run over the same documents re-embeds nothing) and runs the same
`ClaimVerifier` that the `fact_checks` asset uses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from assets.claim_verification import ClaimVerdict, ClaimVerifier, read_claims
from assets.ingestion import chunk_document, load_corpus
from assets.retrieval import collection_name, sync_index


def fact_check_corpus(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> list[ClaimVerdict]:
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {corpus}")
    claims = read_claims(claims_path)
    documents, quarantined = load_corpus([corpus])
    for bad in quarantined:
        print(f"skipped {bad.path}: {bad.reason}")
    if not documents:
        raise ValueError(f"no readable documents in {corpus}")
    resources = build_resources(settings)
    vector_store = resources["vector_store"]
    chunks = [c for d in documents for c in chunk_document(d, resources["pipeline"].chunk_chars)]
    corpus_id = hashlib.sha256("".join(sorted(d.doc_id for d in documents)).encode()).hexdigest()[:12]
    collection = collection_name(f"corpus-{corpus_id}", vector_store.embeddings.model_id)
    sync_index(vector_store, collection, chunks)
    verifier = ClaimVerifier(vector_store, collection, model=resources["model"] if use_model else None)
    return verifier.verify(claims)
