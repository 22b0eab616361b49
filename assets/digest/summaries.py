"""Summaries: the digest, a model-written paragraph per topic, every sentence verified.

The strong tier writes each topic's paragraph from the claims that survived the fact
checks and refinement (a numbered list), citing them. Every sentence it writes is then
verified again, with the same verifier, against the index: a summary can fuse or
overstate claims that were each true. Unsupported sentences are removed and counted, and
the supported claims such a sentence cited (and no kept sentence covers) stand in for it,
so that a failed fusion does not take verified facts out of the digest with it. When
nothing the model wrote holds (or the call failed), the supported claims themselves are
the paragraph, so a digest still appears. The tone and key figures come only from
signals that held up against their evidence.

True is not enough to be published: the publication rules then read the digest as a
whole, in order. A sentence that echoes the prompt, is only a title or a date, or repeats
a sentence published earlier (under any topic) is dropped; a stray label before a
sentence is stripped, and a paragraph cannot open with "It" or "The company". What each
rule did is counted, and the blocking check reads the published digest again for them.
"""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
    asset_check,
)
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.digest.draft_revisions import PublishableClaim, RevisionRound, outcomes
from assets.digest.fact_checks import VERIFIER_VERSION, FactCheck
from assets.digest.retrieval import IndexManifest
from assets.digest.signals import DocumentSignals, KeyFigure
from resources import ModelResource, ModelSession, VectorStoreResource
from resources.documents.text import split_sentences, words_in
from resources.guardrails.prompt_injection import data_block
from resources.pipeline_config import PipelineConfig
from resources.prompts import load_prompt
from resources.storage.output_files import write_whole
from resources.tables import from_frame, to_frame
from resources.verification.citations import citing_within
from resources.verification.claim_verification import Claim, ClaimVerifier
from resources.verification.publication_rules import RULES, Publication, breaches
from resources.verification.sentence_checks import check_sentences

GROUP = "summaries"
HERE = Path(__file__).parent
PROMPT = load_prompt(HERE, "summarize_topic")
CODE_VERSION = f"4-{PROMPT.version}-{VERIFIER_VERSION}"
MAX_SUMMARY_SENTENCES = 6
GENERIC_LABELS = frozenset({"", "figure", "figures", "number", "value", "amount", "key figure", "metric"})


class ParagraphSentence(BaseModel):
    text: str = Field(min_length=8, max_length=500)
    claims: list[int] = Field(min_length=1, max_length=6, description="Numbers of the claims it rests on.")


class TopicParagraph(BaseModel):
    sentences: list[ParagraphSentence] = Field(min_length=1, max_length=MAX_SUMMARY_SENTENCES)


def citing_claims_within(count: int) -> type[TopicParagraph]:
    """The paragraph schema for one request: sentences cite only claims 1..count (else re-asked)."""
    return citing_within(TopicParagraph, count, field="claims", items="claims")


class SummarySentence(BaseModel):
    """One published sentence with the verdict and evidence that let it through."""

    text: str
    origin: str = Field(description="'model' (written by the summary model) or 'claim' (a supported claim, used as is)")
    claim_ids: list[str]
    verdict: str
    score: float = 0.0
    evidence_chunk_ids: list[str]
    evidence_sentence: str = ""
    quote: str = ""


class TopicSummary(BaseModel):
    topic: str
    summary: str
    sentences: list[SummarySentence] = []
    claim_ids: list[str]
    chunk_ids: list[str]
    written_sentences: int = Field(default=0, description="Sentences the summary model wrote.")
    removed_sentences: int = Field(
        default=0, description="Written sentences removed because verification did not support them."
    )
    excluded_claims: int
    rule_counts: dict[str, int] = Field(
        default={}, description="Sentences each publication rule dropped or repaired in this topic's paragraph."
    )
    sentiment_mix: dict[str, int]
    key_figures: list[str]
    index_version: str
    trace_id: str = ""
    model_error: str = ""


def figure_label(figure: KeyFigure) -> str:
    """The figure's label, or, when the extractor gave a generic one, the words before its value in its sentence."""
    if figure.label.strip().lower() not in GENERIC_LABELS:
        return figure.label
    quote = figure.evidence.quote
    at = quote.find(figure.value)
    before = [w for w in quote[:at].split() if words_in(w)] if at >= 0 else []
    after = [w for w in quote[at + len(figure.value) :].split() if words_in(w)] if at >= 0 else quote.split()
    words = before[-4:] or after[:4]
    label = " ".join(w.strip(".,;:()\"'") for w in words).strip()
    return label or figure.label


def source_signals(
    chunk_ids: Sequence[str], signals_by_doc: dict[str, DocumentSignals]
) -> tuple[dict[str, int], list[str]]:
    """Tone mix and key figures of the documents behind these chunks, from grounded signals only."""
    doc_ids = {i.rsplit("-", 1)[0] for i in chunk_ids}
    cited = [signals_by_doc[d] for d in sorted(doc_ids) if d in signals_by_doc]
    tone = dict(Counter(s.grounded_sentiment for s in cited if s.grounded_sentiment))
    figures = list(dict.fromkeys(f"{figure_label(f)}: {f.value}" for s in cited for f in s.trusted_key_figures))[:6]
    return tone, figures


def numbered_claims(claims: Sequence[PublishableClaim]) -> str:
    return "\n".join(f"[{n}] {c.text}" for n, c in enumerate(claims, start=1))


def summary_messages(topic: str, claims: Sequence[PublishableClaim]) -> list[dict[str, str]]:
    return [
        {
            "role": "user",
            "content": PROMPT.render(
                topic=topic.replace("{", "(").replace("}", ")"),
                max_sentences=MAX_SUMMARY_SENTENCES,
                claims=data_block("evidence", numbered_claims(claims)),
            ),
        }
    ]


def claims_as_sentences(claims: Sequence[PublishableClaim]) -> list[SummarySentence]:
    return [
        SummarySentence(
            text=c.text,
            origin="claim",
            claim_ids=[c.claim_id],
            verdict=c.verdict,
            score=c.score,
            evidence_chunk_ids=c.evidence_chunk_ids,
            evidence_sentence=c.evidence_sentence,
            quote=c.quote,
        )
        for c in claims
    ]


def publish(
    publication: Publication, candidates: Sequence[SummarySentence], prompt: str, evidence: str
) -> list[SummarySentence]:
    """The candidates that pass the publication rules, in order (a stray label stripped), as one paragraph."""
    paragraph: list[SummarySentence] = []
    for candidate in candidates:
        text = publication.admit(candidate.text, [s.text for s in paragraph], prompt, evidence)
        if text is not None:
            paragraph.append(candidate.model_copy(update={"text": text}))
    return paragraph


def standing_in(
    written: Sequence[tuple[list[PublishableClaim], SummarySentence | None]],
) -> list[SummarySentence]:
    """The written sentences that were verified, each failed one replaced by the claims it cited
    that no verified sentence cites (once each), in the model's order."""
    covered = {c.claim_id for cited, sentence in written if sentence is not None for c in cited}
    sentences: list[SummarySentence] = []
    for cited, sentence in written:
        if sentence is not None:
            sentences.append(sentence)
            continue
        for claim in claims_as_sentences([c for c in cited if c.claim_id not in covered]):
            covered.update(claim.claim_ids)
            sentences.append(claim)
    return sentences


def assemble(
    topic: str,
    sentences: list[SummarySentence],
    *,
    written: int,
    removed: int,
    excluded: int,
    rule_counts: dict[str, int] | None = None,
    signals_by_doc: dict[str, DocumentSignals],
    index_version: str,
    trace_id: str = "",
    model_error: str = "",
) -> TopicSummary:
    chunk_ids = sorted({i for s in sentences for i in s.evidence_chunk_ids})
    tone, figures = source_signals(chunk_ids, signals_by_doc)
    return TopicSummary(
        topic=topic,
        summary=" ".join(
            s.text.strip() if s.text.strip().endswith((".", "!", "?")) else s.text.strip() + "." for s in sentences
        ),
        sentences=sentences,
        claim_ids=list(dict.fromkeys(i for s in sentences for i in s.claim_ids)),
        chunk_ids=chunk_ids,
        written_sentences=written,
        removed_sentences=removed,
        excluded_claims=excluded,
        rule_counts=rule_counts or {},
        sentiment_mix=tone,
        key_figures=figures,
        index_version=index_version,
        trace_id=trace_id,
        model_error=model_error,
    )


def render_digest(rows: list[TopicSummary]) -> str:
    parts = ["# Digest", ""]
    for row in rows:
        parts += [f"## {row.topic}", "", row.summary or "_No supported claims._", ""]
        if row.key_figures:
            parts += ["Key figures: " + "; ".join(row.key_figures), ""]
        if row.sentiment_mix:
            parts += ["Tone of sources: " + ", ".join(f"{k} {v}" for k, v in sorted(row.sentiment_mix.items())), ""]
        parts += [f"Evidence: {', '.join(row.chunk_ids) or 'none'} (index {row.index_version})", ""]
    return "\n".join(parts)


def write_summaries(
    topics: Sequence[str],
    claims: Sequence[PublishableClaim],
    excluded: Counter,
    *,
    llm: ModelSession,
    verifier: ClaimVerifier,
    decompose: bool,
    signals_by_doc: dict[str, DocumentSignals],
    index_version: str,
) -> list[TopicSummary]:
    """Per topic: the model's paragraph, each sentence verified; the claims themselves when none holds."""
    per_topic = {t: [c for c in claims if c.topic == t] for t in topics}
    asked = [t for t in topics if per_topic[t]]

    def write(topic: str) -> tuple[TopicParagraph | Exception, str]:
        # One request per topic: each has its own schema (the citations its claim list allows).
        return llm.map_traced_structured(
            [summary_messages(topic, per_topic[topic])],
            citing_claims_within(len(per_topic[topic])),
            tier="strong",
            max_tokens=700,
        )[0]

    with ThreadPoolExecutor(max_workers=max(1, min(len(asked), llm.config.max_concurrency))) as pool:
        answers = dict(zip(asked, pool.map(write, asked)))
    prompts = {t: (summary_messages(t, per_topic[t])[0]["content"], numbered_claims(per_topic[t])) for t in asked}
    publication = Publication()
    counts: dict[str, Counter[str]] = {t: Counter() for t in topics}
    # (topic, claims cited, the sentence fit to verify or None when a rule ruled it out before verification)
    written: list[tuple[str, list[PublishableClaim], str | None]] = []
    for topic, (answer, _) in answers.items():
        before = publication.rule_counts()
        if isinstance(answer, TopicParagraph):
            for sentence in answer.sentences:
                cited = [per_topic[topic][n - 1] for n in dict.fromkeys(sentence.claims)]
                for span in split_sentences(sentence.text.strip()) or []:
                    written.append((topic, cited, publication.screen(span.text, *prompts[topic])))
        counts[topic].update({k: v - before[k] for k, v in publication.rule_counts().items()})
    requests = [
        Claim(
            id=f"{topic}#{n}",
            text=text,
            cited_chunk_ids=list(dict.fromkeys(i for c in cited for i in c.evidence_chunk_ids)),
        )
        for n, (topic, cited, text) in enumerate(written)
        if text is not None
    ]
    verdicts = iter(check_sentences(verifier, requests, llm=llm, decompose=decompose))
    checks = [next(verdicts) if text is not None else None for _, _, text in written]
    rows = []
    for topic in topics:
        mine = [(cited, text, check) for (t, cited, text), check in zip(written, checks) if t == topic]
        verified = [
            (
                cited,
                SummarySentence(
                    text=text,
                    origin="model",
                    claim_ids=[c.claim_id for c in cited],
                    verdict=check.verdict,
                    score=check.score,
                    evidence_chunk_ids=check.evidence_chunk_ids,
                    evidence_sentence=check.evidence_sentence,
                    quote=check.quote,
                )
                if text is not None
                and check is not None
                and check.verdict == "supported"
                and not check.contested
                and check.evidence_chunk_ids
                else None,
            )
            for cited, text, check in mine
        ]
        prompt, evidence = prompts.get(topic, ("", ""))
        before = publication.rule_counts()
        held = any(sentence is not None for _, sentence in verified)
        kept = publish(publication, standing_in(verified), prompt, evidence) if held else []
        if not kept:
            kept = publish(publication, claims_as_sentences(per_topic[topic]), prompt, evidence)
        counts[topic].update({k: v - before[k] for k, v in publication.rule_counts().items()})
        answer, trace_id = answers.get(topic, (None, ""))
        rows.append(
            assemble(
                topic,
                kept,
                written=len(mine),
                removed=sum(
                    check is not None and sentence is None for (_, sentence), (_, _, check) in zip(verified, mine)
                ),
                excluded=excluded[topic],
                rule_counts={rule: counts[topic][rule] for rule in RULES},
                signals_by_doc=signals_by_doc,
                index_version=index_version,
                trace_id=trace_id,
                model_error=str(answer) if isinstance(answer, Exception) else "",
            )
        )
    return rows


def publication_breaches(rows: Sequence[TopicSummary], claims: Sequence[PublishableClaim]) -> list[str]:
    """The published sentences that break a publication rule, read in digest order; each topic's
    sentences are checked for echoes of the prompt its paragraph was written from."""
    prompts = []
    for row in rows:
        mine = [c for c in claims if c.topic == row.topic]
        prompts.append((summary_messages(row.topic, mine)[0]["content"] if mine else "", numbered_claims(mine)))
    return breaches([[s.text for s in row.sentences] for row in rows], prompts)


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=TopicSummary,
        kinds={"markdown", "openai"},
        calls_model=True,
        metadata={"prompt_version": PROMPT.version},
    ).asset_keywords()
)
def summaries(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    model: ModelResource,
    vector_store: VectorStoreResource,
    retrieval_index: IndexManifest,
    fact_checks: pd.DataFrame,
    draft_revisions: pd.DataFrame,
    signals: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """The digest: per topic, a model-written paragraph from supported claims, every sentence verified again."""
    checks = from_frame(fact_checks, FactCheck)
    claims, fate = outcomes(checks, from_frame(draft_revisions, RevisionRound))
    excluded = Counter(c.topic for c in checks if fate.get(c.claim_id) in ("withdrawn", "unsupported"))
    signals_by_doc = {s.doc_id: s for s in from_frame(signals, DocumentSignals)}
    with model.session(context) as llm:
        verifier = ClaimVerifier(vector_store, retrieval_index.collection, llm=llm)
        rows = write_summaries(
            list(dict.fromkeys(c.topic for c in checks)),
            claims,
            excluded,
            llm=llm,
            verifier=verifier,
            decompose=pipeline.decompose_claims,
            signals_by_doc=signals_by_doc,
            index_version=retrieval_index.version,
        )
    digest = render_digest(rows)
    path = pipeline.output_path() / "digest.md"
    write_whole(path, digest)
    context.log.info(f"Digest written to {path.resolve()}")
    published = [s for r in rows for s in r.sentences]
    return Output(
        to_frame(rows, TopicSummary),
        metadata={
            "location": MetadataValue.path(str(Path(path).resolve())),
            "topics": len(rows),
            "sentences_published": len(published),
            "model_written_sentences": sum(s.origin == "model" for s in published),
            "claim_sentences": sum(s.origin == "claim" for s in published),
            "model_written_share": round(sum(s.origin == "model" for s in published) / len(published), 3)
            if published
            else 0.0,
            "sentences_written": sum(r.written_sentences for r in rows),
            "sentences_removed": sum(r.removed_sentences for r in rows),
            "claims_published": sum(len(r.claim_ids) for r in rows),
            "claims_excluded": sum(r.excluded_claims for r in rows),
            **{f"rule_{rule}": sum(r.rule_counts.get(rule, 0) for r in rows) for rule in RULES},
            "preview": MetadataValue.md(digest),
        },
    )


@asset_check(
    asset=summaries,
    blocking=True,
    additional_ins={
        "fact_checks": AssetIn("fact_checks"),
        "draft_revisions": AssetIn("draft_revisions"),
        "retrieval_index": AssetIn("retrieval_index"),
    },
    description="Every published sentence has a supported, uncontested verdict whose evidence chunks exist in the "
    "current index; every claim it cites survived verification; no unsupported claim's text is present; and no "
    "published sentence echoes its prompt, repeats an earlier one, starts dangling or is only a title or a date.",
)
def summaries_only_supported_claims(
    vector_store: VectorStoreResource,
    summaries: pd.DataFrame,
    fact_checks: pd.DataFrame,
    draft_revisions: pd.DataFrame,
    retrieval_index: IndexManifest,
) -> AssetCheckResult:
    rows = from_frame(summaries, TopicSummary)
    checks = from_frame(fact_checks, FactCheck)
    claims, fate = outcomes(checks, from_frame(draft_revisions, RevisionRound))
    publishable = {c.claim_id for c in claims}
    indexed = vector_store.ids(retrieval_index.collection)
    sentences = [s for r in rows for s in r.sentences]
    unverified = [s.text for s in sentences if s.verdict != "supported" or not s.evidence_chunk_ids]
    unknown = sorted({i for s in sentences for i in s.evidence_chunk_ids} - indexed)
    bad_claims = [i for s in sentences for i in s.claim_ids if i not in publishable]
    dropped_texts = [c.claim.rstrip(".") for c in checks if fate.get(c.claim_id) in ("withdrawn", "unsupported")]
    leaked = [t for t in dropped_texts if t and any(t in r.summary for r in rows)]
    broken = publication_breaches(rows, claims)
    return AssetCheckResult(
        passed=bool(sentences) and not unverified and not unknown and not bad_claims and not leaked and not broken,
        severity=AssetCheckSeverity.ERROR,
        description=f"{len(sentences)} sentences published; {len(unverified)} without a supported verdict; "
        f"{len(unknown)} evidence chunks not in the index; {len(bad_claims)} unsupported claims cited; "
        f"{len(leaked)} unsupported texts present; {len(broken)} publication rules broken",
        metadata={
            "sentences_published": len(sentences),
            "unverified_sentences": MetadataValue.json(unverified[:20]),
            "unknown_chunk_ids": MetadataValue.json(unknown[:20]),
            "unsupported_claim_ids": MetadataValue.json(bad_claims[:20]),
            "unsupported_texts_present": MetadataValue.json(leaked[:20]),
            "publication_rules_broken": MetadataValue.json(broken[:20]),
        },
    )
