"""The labelled claim sets: which are fitted on, which held out, and how a line becomes claims.

Public, human-labelled, model-written summary sentences, each paired with its whole article
as evidence (the benchmark pairs one article with each summary). A set is a JSONL file: one
claim a line, or one article a line with its summaries (FRANK's per-summary `factuality`).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

# Public, human-labelled, model-written summary sentences the decision is fitted on: CNN/DM-kind
# and XSum-kind, each counting equally (`FitData.weights`).
FIT_SETS = ("frank-cnndm-fit", "xsumfaith-fit")
# Our own paraphrased claims about the sample corpus, as a dataset of a fit: weight 1 a claim, outside the objective.
DEV_DATASET = "fact-check-dev"
HELDOUT_SETS = (
    "frank-cnndm-heldout",
    "frank-xsum-heldout",
    "frank-cnndm-fresh",
    "xsumfaith-heldout",
    "summedits-unseen",
)
# Their figures were seen while the features were first developed; frank-cnndm-fresh was built
# after the features and the selection protocol were fixed, and is measured only by the final report.
LOOKED_AT_BEFORE = frozenset({"frank-cnndm-heldout", "frank-xsum-heldout"})
# Kept entirely unseen: no choice of data, feature, fit or operating point looked at it.
UNSEEN_SETS = ("summedits-unseen",)


class Record(BaseModel):
    """One summary sentence to verify against its article. `label` is supported or unsupported,
    or `partial` for a sentence of a partially factual summary (its own label is unknown: such
    sentences count only at summary level, through `summary_factuality`)."""

    id: str
    dataset: str
    split: str
    article_id: str
    article: str
    claim: str
    label: str
    summarizer: str
    summary_factuality: float | None = None

    @property
    def labelled(self) -> bool:
        return self.label in ("supported", "unsupported")


MIN_CLAIM_WORDS = 3


def _records_of_article(row: dict) -> list[Record]:
    """The per-article format (one article a line, its summaries with FRANK's `factuality`)."""
    out = []
    for summary in row["summaries"]:
        factuality = float(summary["factuality"])
        label = {1.0: "supported", 0.0: "unsupported"}.get(factuality, "partial")
        for index, sentence in enumerate(summary["sentences"]):
            if len(sentence.split()) < MIN_CLAIM_WORDS:
                continue
            out.append(
                Record(
                    id=f"{row['article_id']}-{summary['summarizer']}-{index}",
                    dataset=row["dataset"],
                    split=row["split"],
                    article_id=row["article_id"],
                    article=row["article"],
                    claim=sentence,
                    label=label,
                    summarizer=summary["summarizer"],
                    summary_factuality=factuality,
                )
            )
    return out


def load_set(data_dir: Path, name: str, articles: int | None = None) -> list[Record]:
    """A claim set: one claim a line, or one article a line with its summaries (`summaries` key)."""
    records: list[Record] = []
    for line in (data_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            records.extend(_records_of_article(row) if "summaries" in row else [Record.model_validate(row)])
    if articles is not None:
        keep = list(dict.fromkeys(r.article_id for r in records))[:articles]
        records = [r for r in records if r.article_id in keep]
    return records
