"""Rebuild the XSum faithfulness claim sets in this folder (`xsumfaith-fit`, `xsumfaith-heldout`).

Run: python tests/data/factcheck/build_xsumfaith.py <xsum_hallucination_annotations git dir> <frank git dir>

Why: FRANK's XSum labels serve only as the held-out `frank-xsum-heldout` (36 articles), so the
classifier is fitted on CNN/DM summaries, which are mostly near-extractive, and never sees an
abstractive XSum summary (one sentence each) while fitting. The hallucination annotations of Maynez
et al. (ACL 2020, github.com/google-research-datasets/xsum_hallucination_annotations, CC BY 4.0)
label summaries of the same XSum models independently of FRANK (three workers each marked the spans
of a summary that the article does not support), which gives XSum claims to fit on and a second XSum
held-out set.

That repository has no article texts. FRANK (MIT) distributes the XSum articles of about half of the
500 annotated BBC ids, split into sentences, at commit 6308064
(data/articles-wbertscore-json/<bbcid>.json, `article_lines`); the other ids are left out.

Label of a model summary (`Gold`, the human reference, is left out): `supported` when at least two
of its three workers marked no hallucinated span, `unsupported` when at least two marked one. A
worker marked a span when any of their rows has a hallucination type (a few workers have a NULL row
besides their spans; they count as marking one, which changes no label). A summary with fewer than
three workers and no two-worker majority is left out. Each summary is one sentence, so one claim;
claims under MIN_CLAIM_WORDS words are left out.

Articles of `frank-xsum-heldout.jsonl` are left out entirely (that file stays FRANK's), and so are
articles over MAX_ARTICLE_SENTENCES sentences. The rest alternate, by article in order of the
sha256 of the BBC id, between `xsumfaith-fit.jsonl` (fitting) and `xsumfaith-heldout.jsonl`
(evaluation only).

Also printed, not written: how the majority labels of Maynez et al. agree with FRANK's
`Factuality` of the same summaries (FRANK, commit 80a88fb, data/human_annotations.json), on the
articles of `frank-xsum-heldout` and on those of the two files written here.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).parent
# The newest commit of xsum_hallucination_annotations (the csv was rewritten in it).
ANNOTATIONS_COMMIT = "4abdbb2"
ANNOTATIONS_FILE = "hallucination_annotations_xsum_summaries.csv"
ARTICLES_COMMIT = "6308064"
FRANK_LABELS_COMMIT = "80a88fb"
SYSTEMS = ("BERTS2S", "PtGen", "TConvS2S", "TranS2S")
MIN_CLAIM_WORDS = 3  # as in resources.verification.fitting.labelled_sets
MAX_ARTICLE_SENTENCES = 60
DATASET = "xsumfaith"
SPLITS = ("fit", "heldout")
FRANK_HELDOUT = "frank-xsum-heldout"
# Articles that QAGS-XSum also annotates (with other summaries). QAGS is kept for independent
# evaluation, so nothing is fitted or chosen on its articles either.
QAGS_ARTICLES = frozenset({"39017131", "37276607", "38973171"})


def git_show(repo: Path, spec: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(repo), "show", spec], check=True, capture_output=True, text=True
    ).stdout


def clean(line: str) -> str:
    return line.replace("\\'", "'").strip()


def read_annotations(repo: Path) -> dict[tuple[str, str], tuple[str, dict[str, bool]]]:
    """(bbcid, system) -> (summary, worker -> whether that worker marked a hallucinated span)."""
    text = git_show(repo, f"{ANNOTATIONS_COMMIT}:{ANNOTATIONS_FILE}")
    out: dict[tuple[str, str], tuple[str, dict[str, bool]]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = (row["bbcid"], row["system"])
        summary, marks = out.setdefault(key, (clean(row["summary"]), {}))
        if clean(row["summary"]) != summary:
            raise ValueError(f"two summaries for {key}")
        marks[row["worker_id"]] = marks.get(row["worker_id"], False) or row["hallucination_type"] != "NULL"
    return out


def majority_label(marks: dict[str, bool]) -> str | None:
    """`supported` or `unsupported` by at least two of three workers; None without such a majority."""
    marked = sum(marks.values())
    if len(marks) - marked >= 2:
        return "supported"
    if marked >= 2:
        return "unsupported"
    return None


def article_lines(repo: Path, bbcid: str) -> list[str] | None:
    try:
        source = json.loads(git_show(repo, f"{ARTICLES_COMMIT}:data/articles-wbertscore-json/{bbcid}.json"))
    except subprocess.CalledProcessError:
        return None
    return source["article_lines"]


def agreement(labels: dict[tuple[str, str], str], frank_repo: Path, article_ids: set[str], title: str) -> None:
    """Maynez majority label against FRANK's Factuality (1.0, in between, 0.0), per model summary,
    with the share of agreement and Cohen's kappa over the summaries FRANK rates 1.0 or 0.0."""
    factuality = {
        (row["hash"], row["model_name"]): row["Factuality"]
        for row in json.loads(git_show(frank_repo, f"{FRANK_LABELS_COMMIT}:data/human_annotations.json"))
        if row["hash"] in article_ids
    }
    columns = {"1.0": 1.0, "partial": None, "0.0": 0.0}
    table = Counter(
        (labels[key], next((c for c, v in columns.items() if v == f), "partial"))
        for key, f in factuality.items()
        if key in labels
    )
    unmatched = sum(key not in labels for key in factuality)
    print(
        f"{title}: {len(article_ids)} articles, {len(factuality)} FRANK summaries ({unmatched} without a Maynez label)"
    )
    print(f"  {'Maynez / FRANK':<16}" + "".join(f"{c:>9}" for c in columns))
    for label in ("supported", "unsupported"):
        print(f"  {label:<16}" + "".join(f"{table[(label, c)]:>9}" for c in columns))
    cells = [table[(label, c)] for label in ("supported", "unsupported") for c in ("1.0", "0.0")]
    n = sum(cells)
    if n:
        observed = (cells[0] + cells[3]) / n
        expected = (
            (cells[0] + cells[1]) * (cells[0] + cells[2]) + (cells[2] + cells[3]) * (cells[1] + cells[3])
        ) / n**2
        kappa = (observed - expected) / (1 - expected) if expected < 1 else float("nan")
        print(f"  agreement {observed:.3f}, Cohen's kappa {kappa:.2f} (summaries FRANK rates 1.0 or 0.0)")


def main(xsum_repo: Path, frank_repo: Path) -> None:
    annotations = read_annotations(xsum_repo)
    labels = {key: label for key, (_, marks) in annotations.items() if (label := majority_label(marks)) is not None}
    no_majority = sorted(key for key in annotations if key[1] in SYSTEMS and key not in labels)
    frank_heldout = {
        json.loads(line)["article_id"]
        for line in (HERE / f"{FRANK_HELDOUT}.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    }
    bbcids = sorted({bbcid for bbcid, _ in annotations}, key=lambda b: hashlib.sha256(b.encode()).hexdigest())
    without_article = excluded = too_long = 0
    articles: list[tuple[str, str, list[str]]] = []  # (bbcid, article, systems with a claim)
    for bbcid in bbcids:
        if bbcid in frank_heldout or bbcid in QAGS_ARTICLES:
            excluded += 1
            continue
        lines = article_lines(frank_repo, bbcid)
        if lines is None:
            without_article += 1
            continue
        if len(lines) > MAX_ARTICLE_SENTENCES:
            too_long += 1
            continue
        systems = [
            system
            for system in SYSTEMS
            if (bbcid, system) in labels and len(annotations[(bbcid, system)][0].split()) >= MIN_CLAIM_WORDS
        ]
        if systems:
            articles.append((bbcid, "\n".join(clean(line) for line in lines if line.strip()), systems))
    print(
        f"{len(bbcids)} annotated articles: {excluded} in {FRANK_HELDOUT} or QAGS-XSum, {without_article} without an article in FRANK, "
        f"{too_long} over {MAX_ARTICLE_SENTENCES} sentences, {len(articles)} used; "
        f"model summaries without a majority: {', '.join(f'{b}:{s}' for b, s in no_majority) or 'none'}"
    )
    for parity, split in enumerate(SPLITS):
        chosen = articles[parity :: len(SPLITS)]
        records = [
            {
                "id": f"{bbcid}:{system}",
                "dataset": DATASET,
                "split": split,
                "article_id": bbcid,
                "article": article,
                "claim": annotations[(bbcid, system)][0],
                "label": labels[(bbcid, system)],
                "summarizer": system,
            }
            for bbcid, article, systems in chosen
            for system in systems
        ]
        path = HERE / f"{DATASET}-{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        supported = sum(r["label"] == "supported" for r in records)
        print(
            f"{path.name}: {len(chosen)} articles, {len(records)} claims, "
            f"{supported} supported, {len(records) - supported} unsupported"
        )
    agreement(labels, frank_repo, frank_heldout, f"agreement on the articles of {FRANK_HELDOUT}")
    used = {bbcid for bbcid, _, _ in articles}
    agreement(labels, frank_repo, used, f"agreement on the articles of {DATASET}-fit and {DATASET}-heldout")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
