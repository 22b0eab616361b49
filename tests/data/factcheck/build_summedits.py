"""Rebuild `summedits-unseen.jsonl` from a clone of github.com/salesforce/factualNLG (Apache-2.0).

Run: python tests/data/factcheck/build_summedits.py /path/to/factualNLG/git/dir

Why this set: it is a second public, human-labelled factual-consistency benchmark, of a kind the
FRANK files are not: recent (2023) news articles, summaries written by an LLM as small edits of
a verified seed summary (most of them one sentence), and no overlap with the CNN/DM and XSum
articles of the other files. It is kept
unseen: no feature, threshold, penalty or other choice is fitted or selected on it; it is only
scored in a final evaluation.

Input: `data/summedits/summedits_news.json` at commit 0da1dfa (SummEdits, news domain): one item
per summary with `id` (`<document id>_<n>`, `_og` for the seed summary), `doc`, `summary`,
`original_summary` (the seed), `label` (1 consistent, 0 inconsistent, by human annotators) and
`split` (SummEdits' own `evaluation`/`test`, by document).

Selection: documents of SummEdits' `test` split (the small `evaluation` split is left out), in
id order, of at most MAX_ARTICLE_SENTENCES sentences, whole documents only, until the next one
would take the total over MAX_CLAIMS claims.

Sentences: documents are split with the small deterministic splitter `sentences` below (no
model): each non-empty line is a paragraph; a paragraph is cut after `.`, `!` or `?` (and any
closing quotes or brackets) followed by whitespace and a capital letter (possibly after an
opening quote or bracket), except after a title, month or company abbreviation or an initial
("Mr.", "Jan.", "Inc.", "U.S."), and also where the source lost the space between two sentences
("longer.MSCI's"). Summaries are split the same way.

Label rule (one claim = one summary sentence):
- a consistent summary (label 1) makes every one of its sentences `supported`;
- an inconsistent summary (label 0) labels a sentence only when the annotation locates the error:
  when it has as many sentences as its seed and exactly one of them differs from the seed's
  sentence at the same position, that sentence is `unsupported` and the others (copies of the
  seed's, which annotators verified consistent) are `supported`; other inconsistent summaries
  are left out;
- within a document each sentence text is kept once (the seed first, then the edits by number);
  a text that would get both labels is left out; sentences under MIN_CLAIM_WORDS words are left
  out.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TypedDict

HERE = Path(__file__).parent
COMMIT = "0da1dfa"
SOURCE = "data/summedits/summedits_news.json"
NAME = "summedits-unseen"
SUMMEDITS_SPLIT = "test"
MAX_ARTICLE_SENTENCES = 60
MAX_CLAIMS = 600
MIN_CLAIM_WORDS = 3
# A sentence ends at . ! or ? (with any closing quotes or brackets) followed by whitespace and a
# capital letter (possibly after an opening quote or bracket) ...
SPACED_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s+[\"'“‘(\[]?[A-Z])")
# ... or, where the source lost the space ("longer.MSCI's"), at . ! or ? between a lower-case letter,
# digit, % or ) and a capital letter followed by a letter or by ".X" ("rises.U.S. crude"), so
# that "U.S." and "$1.5" are not cut.
GLUED_END = re.compile(r"(?<=[a-z0-9%)])[.!?](?=[\"“]?[A-Z](?:[A-Za-z]|\.[A-Z]))")
# Words whose final period is not a sentence end: titles, months, company suffixes, initials.
ABBREVIATIONS = frozenset(
    "Mr Mrs Ms Dr Prof Jr Sr St Gen Gov Sen Rep Lt Col Capt Sgt Rev Inc Corp Co Ltd No vs "
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec".split()
)


class Item(TypedDict):
    id: str
    doc: str
    summary: str
    original_summary: str
    label: int
    split: str


def git_show(repo: Path, spec: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), "show", spec], check=True, capture_output=True, text=True
    ).stdout


def split_paragraph(paragraph: str) -> list[str]:
    """Cut one paragraph (whitespace already normalised) into sentences."""
    cuts: set[int] = set()
    for match in SPACED_END.finditer(paragraph):
        word = paragraph[: match.start()].rsplit(" ", 1)[-1].lstrip("\"'“‘([")
        if match.group() == "." and (word in ABBREVIATIONS or re.fullmatch(r"(?:[A-Za-z]\.)*[A-Z]", word)):
            continue
        cuts.add(match.end())
    cuts.update(match.end() for match in GLUED_END.finditer(paragraph))
    bounds = [0, *sorted(cuts), len(paragraph)]
    return [paragraph[a:b].strip() for a, b in zip(bounds, bounds[1:]) if paragraph[a:b].strip()]


def sentences(text: str) -> list[str]:
    """Split text into sentences: each non-empty line is a paragraph, cut by `split_paragraph`."""
    out: list[str] = []
    for line in text.splitlines():
        paragraph = " ".join(line.split())
        if paragraph:
            out.extend(split_paragraph(paragraph))
    return out


def sentence_labels(item: Item) -> list[tuple[int, str, str]]:
    """(index, sentence, label) for the sentences of a summary whose label the annotation determines."""
    summary = sentences(item["summary"])
    if item["label"] == 1:
        return [(i, s, "supported") for i, s in enumerate(summary)]
    seed = sentences(item["original_summary"])
    if len(seed) != len(summary):
        return []
    changed = [i for i, (a, b) in enumerate(zip(summary, seed)) if a != b]
    if len(changed) != 1:
        return []
    return [(i, s, "unsupported" if i == changed[0] else "supported") for i, s in enumerate(summary)]


def item_order(item: Item) -> tuple[int, int]:
    """The seed summary first, then the edits by number."""
    suffix = item["id"].rsplit("_", 1)[1]
    return (0, 0) if suffix == "og" else (1, int(suffix))


def main(repo: Path) -> None:
    items: list[Item] = json.loads(git_show(repo, f"{COMMIT}:{SOURCE}"))
    by_doc: dict[str, list[Item]] = {}
    for item in items:
        by_doc.setdefault(item["id"].rsplit("_", 1)[0], []).append(item)
    records: list[dict[str, str]] = []
    articles = 0
    for doc_id in sorted(by_doc):
        doc_items = sorted(by_doc[doc_id], key=item_order)
        article_lines = sentences(doc_items[0]["doc"])
        if doc_items[0]["split"] != SUMMEDITS_SPLIT or len(article_lines) > MAX_ARTICLE_SENTENCES:
            continue
        article = "\n".join(article_lines)
        labels: dict[str, set[str]] = {}
        first: dict[str, tuple[Item, int]] = {}
        for item in doc_items:
            for index, sentence, label in sentence_labels(item):
                if len(sentence.split()) < MIN_CLAIM_WORDS:
                    continue
                labels.setdefault(sentence, set()).add(label)
                first.setdefault(sentence, (item, index))
        claims: list[dict[str, str]] = []
        for sentence, (item, index) in first.items():
            if len(labels[sentence]) != 1:
                continue
            claims.append(
                {
                    "id": f"{item['id']}-{index}",
                    "dataset": "summedits-news",
                    "split": "unseen",
                    "article_id": doc_id,
                    "article": article,
                    "claim": sentence,
                    "label": labels[sentence].pop(),
                    "summarizer": "seed" if item["id"].endswith("_og") else "llm-edit",
                }
            )
        if len(records) + len(claims) > MAX_CLAIMS:
            break
        records.extend(claims)
        articles += 1 if claims else 0
    path = HERE / f"{NAME}.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    supported = sum(r["label"] == "supported" for r in records)
    print(
        f"{path.name}: {articles} articles, {len(records)} claims, {supported} supported, {len(records) - supported} unsupported"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
