"""Builds the fact-check judge's calibration sample (resources/verification/calibration/fact_check_judge_sample.jsonl).

The sample is drawn from `frank-cnndm-heldout.jsonl`, which the verifier's classifier is never
fitted on, so the judge is compared with the classifier on claims neither has learnt from. Per
label (supported, unsupported), claims are taken in the order of a hash of their id, at most one
per article, until `PER_LABEL` of each. Each claim's evidence is the article sentences that share
most of its content words (kept in article order), so that a judge call stays short. Then the
sample's claim features are stored for the bundled embedder (`fact_check_judge_features.json`),
so that a run measuring a judge pays for the judge's answers only; run it again after a change
to `resources/verification/claim_features.py`.

    .venv/bin/python tests/data/factcheck/build_judge_sample.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from resources.verification.fact_check_judge import write_sample_features
from resources import EmbeddingsResource
from resources.verification.claim_features import content_words

ROOT = Path(__file__).resolve().parents[3]
SOURCE = Path(__file__).parent / "frank-cnndm-heldout.jsonl"
TARGET = ROOT / "resources" / "verification" / "calibration" / "fact_check_judge_sample.jsonl"
PER_LABEL = 24
EVIDENCE_SENTENCES = 4


def evidence_of(claim: str, article: list[str]) -> str:
    words = content_words(claim)
    ranked = sorted(range(len(article)), key=lambda i: (-len(words & content_words(article[i])), i))
    return " ".join(article[i].strip() for i in sorted(ranked[:EVIDENCE_SENTENCES]))


def main() -> None:
    records = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    records.sort(key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
    chosen: list[dict] = []
    for label in ("supported", "unsupported"):
        articles: set[str] = set()
        for record in records:
            if record["label"] != label or record["article_id"] in articles:
                continue
            articles.add(record["article_id"])
            article = [s for s in record["article"].split("\n") if s.strip()]
            chosen.append(
                {
                    "id": record["id"],
                    "claim": record["claim"],
                    "evidence": evidence_of(record["claim"], article),
                    "label": label,
                }
            )
            if len(articles) == PER_LABEL:
                break
    TARGET.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in chosen), encoding="utf-8")
    print(f"{len(chosen)} claims written to {TARGET}")
    print(f"their features written to {write_sample_features(EmbeddingsResource())}")


if __name__ == "__main__":
    main()
