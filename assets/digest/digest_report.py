"""The digest report: one self-contained HTML file a person reads instead of tables.

It shows the digest, what each stage wrote, revised, replaced and dropped (as counts:
the text of a claim that failed verification is never shown as if it could be read as
news), every published sentence with its verdict, quote and evidence, and charts where looking beats reading: what the signals say across
documents and over time, and what each stage cost in calls, tokens and money. The
costs come from the trace table rows of the calls behind the rows shown, so the
report accounts for exactly this digest, whichever runs produced its parts.
"""

from collections import Counter, defaultdict
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets.components.asset_spec import PipelineAssetSpec
from assets.digest.draft_revisions import RevisionRound, outcomes
from assets.digest.drafts import DraftClaim
from assets.digest.fact_checks import FactCheck
from assets.digest.signals import DocumentSignals
from assets.digest.summaries import TopicSummary
from resources import ModelResource, TraceStore, reveal
from resources.documents.records import SourceDocument
from resources.metadata.charts import stacked_bars
from resources.pipeline_config import PipelineConfig
from resources.storage.output_files import write_whole
from resources.tables import from_frame
from resources.verification.publication_rules import (
    DANGLING_START_DROPPED,
    DANGLING_START_REPAIRED,
    LIST_FURNITURE,
    PROMPT_ECHO,
    REPEATED_SENTENCE,
    RULES,
)

GROUP = "summaries"
CODE_VERSION = "3"
VERDICT_COLOURS = {"supported": "#2e7d32", "refuted": "#c62828", "not_enough_info": "#8d6e63"}
SENTIMENTS = ["positive", "neutral", "mixed", "negative"]
RULE_LABELS = {
    PROMPT_ECHO: "prompt echoes (dropped)",
    LIST_FURNITURE: "titles or dates (dropped)",
    DANGLING_START_DROPPED: "dangling starts (dropped)",
    DANGLING_START_REPAIRED: "stray labels (stripped)",
    REPEATED_SENTENCE: "repeats (dropped)",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; margin-bottom: 1.5rem; }
section { margin-bottom: 2rem; } .charts { display: flex; flex-wrap: wrap; gap: 2rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.4rem; text-align: left; vertical-align: top; }
.verdict { color: white; border-radius: 3px; padding: 0.1rem 0.4rem; white-space: nowrap; }
.evidence { color: #444; font-style: italic; } .ids { color: #777; font-family: monospace; font-size: 0.8rem; }
"""


def signals_over_time(signals: list[DocumentSignals], published: dict[str, str]) -> str:
    by_month: dict[str, Counter] = defaultdict(Counter)
    for row in signals:
        by_month[(published.get(row.doc_id) or "undated")[:7]][row.grounded_sentiment or "ungrounded"] += 1
    rows = [(month, dict(counts)) for month, counts in sorted(by_month.items())]
    series = SENTIMENTS + sorted({s for _, c in rows for s in c} - set(SENTIMENTS))
    return stacked_bars("Documents by month and tone", rows, series)


def signals_per_document(signals: list[DocumentSignals], limit: int = 25) -> str:
    ranked = sorted(signals, key=lambda r: -(len(r.entities) + len(r.events) + len(r.key_figures)))[:limit]
    rows = [
        (r.title, {"entities": len(r.entities), "events": len(r.events), "key figures": len(r.key_figures)})
        for r in ranked
    ]
    return stacked_bars(f"Grounded signals per document (top {len(rows)})", rows, ["entities", "events", "key figures"])


def usage_per_stage(traces_by_stage: dict[str, list[dict]]) -> tuple[str, str]:
    tokens = [
        (
            stage,
            {
                "prompt": sum(t["prompt_tokens"] or 0 for t in rows),
                "completion": sum(t["completion_tokens"] or 0 for t in rows),
            },
        )
        for stage, rows in traces_by_stage.items()
    ]
    cost = [(stage, {"cost": sum(t["cost_usd"] or 0.0 for t in rows)}) for stage, rows in traces_by_stage.items()]
    return (
        stacked_bars("Tokens per stage", tokens, ["prompt", "completion"]),
        stacked_bars("Cost per stage", cost, ["cost"], unit=" USD"),
    )


def stage_counts(
    drafts: list[DraftClaim], checks: list[FactCheck], revisions: list[RevisionRound], summaries: list[TopicSummary]
) -> dict[str, dict[str, object]]:
    """Per stage, what was written, revised, replaced, dropped and supported: the figures a person checks first."""
    _, fate = outcomes(checks, revisions)
    outcome = Counter(fate.values())
    total = len(checks)
    verdicts = Counter(c.verdict for c in checks)
    sentences = [s for r in summaries for s in r.sentences]
    published_claims = sum(outcome[k] for k in ("model", "revised", "extractive"))
    return {
        "drafts": {
            "claims": len(drafts),
            "model-written": sum(d.origin == "model" for d in drafts),
            "extractive": sum(d.origin == "extractive" for d in drafts),
        },
        "fact checks": {
            "supported": verdicts["supported"],
            "refuted": verdicts["refuted"],
            "not enough info": verdicts["not_enough_info"],
            "supported share": round(verdicts["supported"] / total, 3) if total else 0.0,
        },
        "refinement": {
            "rounds": len(revisions),
            "revised": outcome["revised"],
            "extractive": outcome["extractive"],
            "withdrawn (dropped)": outcome["withdrawn"],
            "unsupported at cap (dropped)": outcome["unsupported"],
            "duplicates": outcome["duplicate"],
            "supported share after": round((published_claims + outcome["duplicate"]) / total, 3) if total else 0.0,
        },
        "summaries": {
            "sentences written": sum(r.written_sentences for r in summaries),
            "removed (unsupported)": sum(r.removed_sentences for r in summaries),
            "published": len(sentences),
            "model-written": sum(s.origin == "model" for s in sentences),
            "claims used as is": sum(s.origin == "claim" for s in sentences),
            **{RULE_LABELS[rule]: sum(r.rule_counts.get(rule, 0) for r in summaries) for rule in RULES},
        },
    }


def counts_table(counts: dict[str, dict[str, object]]) -> str:
    lines = ["<table><tr><th>Stage</th><th>Counts</th></tr>"]
    for stage, figures in counts.items():
        cells = " · ".join(f"{escape(k)} <b>{escape(str(v))}</b>" for k, v in figures.items())
        lines.append(f"<tr><td>{escape(stage)}</td><td>{cells}</td></tr>")
    lines.append("</table>")
    return "".join(lines)


def sentences_table(summaries: list[TopicSummary]) -> str:
    """Every published sentence with its verdict, the judge's quote (if any) and its evidence."""
    lines = ["<table><tr><th>Sentence</th><th>Verdict</th><th>Score</th><th>Quote and evidence</th></tr>"]
    for row in summaries:
        for sentence in row.sentences:
            colour = VERDICT_COLOURS.get(sentence.verdict, "#555")
            quote = f"<div>“{escape(sentence.quote)}”</div>" if sentence.quote else ""
            lines.append(
                f"<tr><td>{escape(sentence.text)}<div class='ids'>{escape(row.topic)} · {escape(sentence.origin)}"
                f" · claims {escape(', '.join(sentence.claim_ids))}</div></td>"
                f"<td><span class='verdict' style='background:{colour}'>{escape(sentence.verdict)}</span></td>"
                f"<td>{sentence.score:.3f}</td>"
                f"<td>{quote}<span class='evidence'>{escape(sentence.evidence_sentence)}</span>"
                f"<div class='ids'>{escape(', '.join(sentence.evidence_chunk_ids))}</div></td></tr>"
            )
    lines.append("</table>")
    return "".join(lines)


def topics_section(summaries: list[TopicSummary]) -> str:
    parts = []
    for row in summaries:
        figures = f"<p><b>Key figures:</b> {escape('; '.join(row.key_figures))}</p>" if row.key_figures else ""
        tone = ", ".join(f"{k} {v}" for k, v in sorted(row.sentiment_mix.items()))
        parts.append(
            f"<h3>{escape(row.topic)}</h3><p>{escape(row.summary) or '<i>No supported claims.</i>'}</p>{figures}"
            f"<p class='ids'>tone of sources: {escape(tone) or 'n/a'} · evidence: {escape(', '.join(row.chunk_ids))}</p>"
        )
    return "".join(parts)


def render_report(
    summaries: list[TopicSummary],
    checks: list[FactCheck],
    signals: list[DocumentSignals],
    published: dict[str, str],
    traces_by_stage: dict[str, list[dict]],
    run_id: str,
    counts: dict[str, dict[str, object]] | None = None,
) -> str:
    verdicts = Counter(c.verdict for c in checks)
    tokens_chart, cost_chart = usage_per_stage(traces_by_stage)
    index_version = checks[0].index_version if checks else "n/a"
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Digest report</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>Digest report</h1>"
        f"<div class='meta'>generated {generated} · run {escape(run_id)} · index {escape(index_version)} · "
        f"{len(signals)} documents · {len(checks)} claims: "
        + ", ".join(f"{v} {escape(k)}" for k, v in sorted(verdicts.items()))
        + " before refinement</div>"
        f"<section><h2>Summary</h2>{topics_section(summaries)}</section>"
        f"<section><h2>What each stage wrote, revised and dropped</h2>{counts_table(counts or {})}"
        "<p class='ids'>Dropped claims and removed sentences are counted, never shown: they failed verification.</p>"
        "</section>"
        f"<section><h2>Signals</h2><div class='charts'>{signals_over_time(signals, published)}"
        f"{signals_per_document(signals)}</div></section>"
        f"<section><h2>Published sentences and their evidence</h2>{sentences_table(summaries)}</section>"
        f"<section><h2>Model usage behind this digest</h2><div class='charts'>{tokens_chart}{cost_chart}</div>"
        "<p class='ids'>Costs use AI_PIPELINES_LLM_INPUT_PRICE_PER_MTOK and _OUTPUT_PRICE_PER_MTOK (0 for local models).</p>"
        "</section>"
        "</body></html>"
    )


@asset(**PipelineAssetSpec(group=GROUP, code_version=CODE_VERSION, kinds={"html"}).asset_keywords())
def digest_report(
    context: AssetExecutionContext,
    pipeline: PipelineConfig,
    model: ModelResource,
    summaries: pd.DataFrame,
    fact_checks: pd.DataFrame,
    draft_revisions: pd.DataFrame,
    drafts: pd.DataFrame,
    signals: pd.DataFrame,
    source_documents: pd.DataFrame,
) -> Output[dict]:
    """The digest as a self-contained HTML report: summary, per-stage counts, every published sentence with its evidence, charts."""
    checks = from_frame(fact_checks, FactCheck)
    draft_rows = from_frame(drafts, DraftClaim)
    revisions = from_frame(draft_revisions, RevisionRound)
    summary_rows = from_frame(summaries, TopicSummary)
    counts = stage_counts(draft_rows, checks, revisions, summary_rows)
    signal_rows = from_frame(signals, DocumentSignals)
    published = {d.doc_id: d.published for d in from_frame(source_documents, SourceDocument)}
    trace_ids = {
        "signals": [r.trace_id for r in signal_rows if r.trace_id],
        "drafts": list(dict.fromkeys(c.trace_id for c in draft_rows if c.trace_id)),
        "refinement": [r.trace_id for r in revisions if r.trace_id],
        "summaries": [r.trace_id for r in summary_rows if r.trace_id],
    }
    # The model's trace table, read as a person would look a call up; no call is made here.
    traces = TraceStore(reveal(model.trace_path)) if model.trace_path else None
    traces_by_stage = {stage: traces.get_many(ids) if traces else [] for stage, ids in trace_ids.items()}
    html = render_report(summary_rows, checks, signal_rows, published, traces_by_stage, context.run_id, counts)
    path = pipeline.output_path() / "digest.html"
    write_whole(path, html)
    context.log.info(f"Digest report written to {path.resolve()}")
    location = str(Path(path).resolve())
    return Output(
        {"path": location},
        metadata={
            "location": MetadataValue.path(location),
            "report": MetadataValue.url(f"file://{location}"),
            "claims": len(checks),
            "sentences_published": sum(len(r.sentences) for r in summary_rows),
            **{f"{stage.replace(' ', '_')}_counts": MetadataValue.json(figures) for stage, figures in counts.items()},
            "counts": MetadataValue.md(
                "\n".join(
                    f"- **{stage}**: " + ", ".join(f"{k} {v}" for k, v in figures.items())
                    for stage, figures in counts.items()
                )
            ),
            "documents": len(signal_rows),
            "traced_calls": sum(len(v) for v in traces_by_stage.values()),
            "bytes": len(html.encode()),
        },
    )
