"""Labelled claims scored as the verifier scores a claim: features against the article, and the baseline's score.

The baseline is one feature, the maximum cosine between the claim and a source sentence: what
a verifier has to beat to be worth its features.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field

from resources import EmbeddingsResource
from resources.verification.claim_features import Candidate, ClaimFeatures, candidate_vectors, claim_features
from resources.verification.fact_check_judge import embedded_evidence
from resources.verification.fitting.labelled_sets import Record


class Scored(BaseModel):
    """One claim's features and baseline score; `supported` is the human label."""

    id: str
    supported: bool
    features: ClaimFeatures
    baseline: float
    claim: str = ""
    candidates: list[Candidate] = []
    label: str = ""
    article_id: str = ""
    summarizer: str = ""
    summary_factuality: float | None = None


def score_records(records: Sequence[Record], embeddings: EmbeddingsResource) -> list[Scored]:
    """Features for every claim; each article's sentences are embedded once for all its claims."""
    candidates, passage_vectors = embedded_evidence(embeddings, {r.article_id: r.article for r in records})
    claim_vectors = embeddings.embed_queries([r.claim for r in records])
    out = []
    for record, vector in zip(records, claim_vectors):
        cands = candidates[record.article_id]
        vectors = candidate_vectors(cands, passage_vectors)
        singles = [c.text for c in cands if c.sentences == 1]
        baseline = float(max((passage_vectors[s] @ vector for s in singles), default=0.0))
        out.append(
            Scored(
                id=record.id,
                supported=record.label == "supported",
                features=claim_features(record.claim, vector, cands, vectors),
                baseline=baseline,
                claim=record.claim,
                candidates=cands,
                label=record.label,
                article_id=record.article_id,
                summarizer=record.summarizer,
                summary_factuality=record.summary_factuality,
            )
        )
    return out


class DevClaim(BaseModel):
    """One of our paraphrased dev claims, scored by the real `ClaimVerifier` against the sample corpus."""

    label: str
    features: ClaimFeatures
    source: str = Field(
        default="", description="The sample-corpus document the claim is about: its cross-validation group."
    )


def labelled(scored: Sequence[Scored]) -> list[Scored]:
    """Claims with a sentence label (sentences of partially factual summaries have none)."""
    return [s for s in scored if s.label in ("supported", "unsupported")]
