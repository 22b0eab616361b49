"""Rebuild the FRANK claim sets in this folder from a clone of github.com/artidoro/frank (MIT).

Run: python tests/data/factcheck/build_frank.py /path/to/frank/git/dir
Articles and model summaries come from commit 6308064 (data/articles-wbertscore-json/*.json);
the human judgements from the newest commit (data/human_annotations.json). Articles are taken in
hash order among those of FRANK's split that have at least one summary of the minority label. Only summaries whose
`Factuality` is 1.0 (no sentence has an error) or 0.0 (every sentence has one) give sentence labels, so that
every sentence's label is known: FRANK's per-sentence file (data/human_annotations_sentence.json)
is listed in the snapshot but its content is absent.

`frank-cnndm-fresh.jsonl` is built last, from CNN/DM articles that are in none of the other files,
one article a line with all of its annotated summaries and their `Factuality` (so partially
factual summaries count at summary level). It was added after the features and the fitting
protocol of the other files had been developed, and serves as the untouched held-out set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ARTICLES_COMMIT = "6308064"
SIZES = {"frank-cnndm-fit": 30, "frank-cnndm-heldout": 30, "frank-xsum-heldout": 36}
MAX_ARTICLE_SENTENCES = 40
FRESH = "frank-cnndm-fresh"
FRESH_ARTICLES = 50


def git_show(repo: Path, spec: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "show", spec], check=True, capture_output=True, text=True).stdout


def clean(line: str) -> str:
    return line.replace("\\'", "'").strip()


def fresh_articles(repo: Path, by_hash: dict[str, list[dict]], used: set[str]) -> list[dict]:
    """CNN/DM articles in no other file: every one with a fully wrong summary (whatever its length:
    they are few), then the others in hash order (at most MAX_ARTICLE_SENTENCES sentences) up to
    FRESH_ARTICLES. One record per article, with every annotated summary and its Factuality."""
    unused = sorted(h for h, rows in by_hash.items() if rows[0]["dataset"] == "cnndm" and h not in used)
    with_errors = [h for h in unused if any(r["Factuality"] == 0.0 for r in by_hash[h])]
    out: list[dict] = []
    for article_hash in with_errors + [h for h in unused if h not in with_errors]:
        if len(out) == FRESH_ARTICLES:
            break
        try:
            source = json.loads(git_show(repo, f"{ARTICLES_COMMIT}:data/articles-wbertscore-json/{article_hash}.json"))
        except subprocess.CalledProcessError:
            continue
        if article_hash not in with_errors and len(source["article_lines"]) > MAX_ARTICLE_SENTENCES:
            continue
        summaries = [
            {
                "summarizer": row["model_name"],
                "factuality": row["Factuality"],
                "sentences": [clean(s) for s in source.get(f"{row['model_name']}_lines") or [] if clean(s)],
            }
            for row in sorted(by_hash[article_hash], key=lambda r: r["model_name"])
        ]
        out.append(
            {
                "article_id": article_hash,
                "dataset": "frank-cnndm",
                "split": "fresh",
                "article": "\n".join(clean(line) for line in source["article_lines"] if line.strip()),
                "summaries": [s for s in summaries if s["sentences"]],
            }
        )
    return sorted(out, key=lambda a: a["article_id"])


def main(repo: Path) -> None:
    annotations = json.loads(git_show(repo, "HEAD:data/human_annotations.json"))
    by_article: dict[str, list[dict]] = {}
    for row in annotations:
        if row["Factuality"] in (0.0, 1.0):
            by_article.setdefault(row["hash"], []).append(row)
    # CNN/DM articles of both FRANK splits alternate between fit and held-out (by article, never
    # by summary); XSum comes from FRANK's test split and is never fitted on.
    plan = {
        "frank-cnndm-fit": ("cnndm", ("valid", "test"), 0),
        "frank-cnndm-heldout": ("cnndm", ("valid", "test"), 1),
        "frank-xsum-heldout": ("bbc", ("test",), 0),
    }
    used: set[str] = set()
    for name, (dataset, splits, parity) in plan.items():
        # Both labels in every article where FRANK has them: the minority label (errors in CNN/DM,
        # correct summaries in XSum) would otherwise be a handful of claims.
        minority = 0.0 if dataset == "cnndm" else 1.0
        hashes = sorted(
            h
            for h, rows in by_article.items()
            if rows[0]["dataset"] == dataset and rows[0]["split"] in splits and any(r["Factuality"] == minority for r in rows)
        )
        if dataset == "cnndm":
            hashes = hashes[parity::2]
        records: list[dict] = []
        articles = 0
        for article_hash in hashes:
            if articles == SIZES[name]:
                break
            try:
                source = json.loads(git_show(repo, f"{ARTICLES_COMMIT}:data/articles-wbertscore-json/{article_hash}.json"))
            except subprocess.CalledProcessError:
                continue
            if len(source["article_lines"]) > MAX_ARTICLE_SENTENCES:
                continue
            article = "\n".join(line.replace("\\'", "'").strip() for line in source["article_lines"] if line.strip())
            added = 0
            for row in by_article[article_hash]:
                lines = source.get(f"{row['model_name']}_lines") or []
                label = "supported" if row["Factuality"] == 1.0 else "unsupported"
                for index, sentence in enumerate(s.replace("\\'", "'").strip() for s in lines):
                    if len(sentence.split()) < 3:
                        continue
                    records.append(
                        {
                            "id": f"{article_hash}-{row['model_name']}-{index}",
                            "dataset": "frank-cnndm" if dataset == "cnndm" else "frank-xsum",
                            "split": name.rsplit("-", 1)[1],
                            "article_id": article_hash,
                            "article": article,
                            "claim": sentence,
                            "label": label,
                            "summarizer": row["model_name"],
                        }
                    )
                    added += 1
            articles += 1 if added else 0
        used |= {r["article_id"] for r in records}
        path = HERE / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        supported = sum(r["label"] == "supported" for r in records)
        print(f"{path.name}: {articles} articles, {len(records)} claims, {supported} supported")
    by_hash: dict[str, list[dict]] = {}
    for row in annotations:
        by_hash.setdefault(row["hash"], []).append(row)
    fresh = fresh_articles(repo, by_hash, used)
    path = HERE / f"{FRESH}.jsonl"
    path.write_text("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in fresh), encoding="utf-8")
    summaries = [s for a in fresh for s in a["summaries"]]
    print(f"{path.name}: {len(fresh)} articles, {len(summaries)} summaries, {sum(s['factuality'] == 1.0 for s in summaries)} fully factual")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
