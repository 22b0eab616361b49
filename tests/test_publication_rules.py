"""The publication rules on the whole digest graph: the fake server, scripted as a small model,
writes each fault the rules exist for, and the published digest holds none of them.

Drafts copy an evidence line's "(title, date)" as a sentence and, on first asking, echo
the drafting instructions and write one sentence twice (the re-ask's answer repeats it
less its last word); summary paragraphs echo their instructions, open a sentence
with a stray "2026:" and repeat one sentence under two topics. Every fault is either
repaired or dropped, and each rule's count is in the materialization metadata.
"""

import re

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from assets.digest.summaries import TopicSummary
from resources.tables import from_frame
from resources.verification.publication_rules import RULES, sentence_key
from tests.conftest import materialization_metadata, run_digest_job, warehouse_rows
from tests.fake_openai import data_block, evidence_items, numbered_claims

pytestmark = pytest.mark.integration

DRAFT_ECHO = "Use only the facts in the numbered evidence list inside the evidence block."
SUMMARY_ECHO = "Write a summary paragraph about {topic} for a reader who follows the news."
# A sentence of the corpus that names two topics: true under both, to be told once.
SHARED = "Quanta Ledger and Bluefin Foods were among the companies named by Nordlys Data as the fastest-growing in the region."
SHARED_TOPICS = ("Quanta Ledger", "Bluefin Foods")


def sources(messages: list[dict[str, str]]) -> list[str]:
    """The "(title, date)" source of each numbered evidence line, as the drafting prompt shows it."""
    return re.findall(r"^\[\d+\] \((.*?)\) ", data_block(messages, "evidence") or "", flags=re.M)


def faulty_brief(messages: list[dict[str, str]]) -> dict:
    """Evidence sentences as written, plus the first item's source line as if it were a sentence;
    the first answer also echoes the instructions and copies its first sentence, and the re-ask's
    answer (which carries the errors) repeats that sentence less its last word."""
    sentences = [{"text": s, "evidence": [n]} for n, s in evidence_items(messages)[:6]]
    sentences.append({"text": f"{sources(messages)[0]}.", "evidence": [1]})
    first = sentences[0]["text"]
    if len(messages) == 1:
        sentences.insert(0, {"text": DRAFT_ECHO, "evidence": [1]})
        sentences.insert(2, {"text": first.upper(), "evidence": [1]})
    else:
        sentences.insert(1, {"text": first.rsplit(" ", 1)[0] + ".", "evidence": [1]})
    return {"sentences": sentences[:8]}


def faulty_paragraph(messages: list[dict[str, str]]) -> dict:
    """The claims as written, after an echo of the instructions; the first claim dated 2026 opens
    with a stray "2026:"; the two topics the shared sentence names both end with it."""
    topic = re.search(r"about (.+?) for a reader", messages[0]["content"]).group(1)
    claims = numbered_claims(messages)[:4]
    dated = next((n for n, text in claims if "2026" in text), None)
    sentences = [{"text": SUMMARY_ECHO.format(topic=topic), "claims": [1]}]
    sentences += [{"text": f"2026: {text}" if n == dated else text, "claims": [n]} for n, text in claims]
    if topic in SHARED_TOPICS:
        sentences.append({"text": SHARED, "claims": [1]})
    return {"sentences": sentences}


def claims_by_draft(settings) -> dict[str, list[str]]:
    drafts: dict[str, list[str]] = {}
    for row in warehouse_rows(settings, "drafts"):
        drafts.setdefault(row["draft_id"], []).append(row["text"])
    return drafts


def test_the_published_digest_has_no_echo_repeat_dangling_start_or_list_furniture(settings, llm):
    llm.scripts["DraftBrief"] = faulty_brief
    llm.scripts["TopicParagraph"] = faulty_paragraph
    result = run_digest_job(settings, DagsterInstance.ephemeral())
    assert result.success

    drafts = materialization_metadata(result, "drafts")
    claims = [row["text"] for row in warehouse_rows(settings, "drafts")]
    assert drafts["drafts"] >= 2 and drafts["list_furniture_dropped"] == drafts["drafts"]
    assert llm.calls_for("DraftBrief") == 2 * drafts["drafts"]  # each draft re-asked once, for its echo and copy
    reasks = [c["messages"][-1]["content"] for c in llm.calls if c["schema"] == "DraftBrief" and len(c["messages"]) > 1]
    assert len(reasks) == drafts["drafts"] and all("sentence 3 repeats sentence 2" in m for m in reasks), reasks[:1]
    assert drafts["repeated_sentences_dropped"] == drafts["drafts"]
    assert not any(len(set(map(sentence_key, t))) < len(t) for t in claims_by_draft(settings).values())
    assert DRAFT_ECHO not in claims and not any(text in claims for text in drafts["list_furniture_lines"])
    assert all(re.search(r", \d{4}-\d{2}-\d{2}\.$", line) for line in drafts["list_furniture_lines"])

    summaries = materialization_metadata(result, "summaries")
    rows = from_frame(pd.DataFrame(warehouse_rows(settings, "summaries")), TopicSummary)
    topics = [row.topic for row in rows]
    assert set(SHARED_TOPICS) <= set(topics)
    assert {f"rule_{rule}" for rule in RULES} <= summaries.keys()
    assert summaries["rule_prompt_echo"] == len(topics)
    assert summaries["rule_dangling_start_repaired"] >= 1
    assert summaries["rule_repeated_sentence"] >= 1
    assert sum(sum(row.rule_counts.values()) for row in rows) == sum(summaries[f"rule_{r}"] for r in RULES)

    published = [s.text for row in rows for s in row.sentences]
    assert len({sentence_key(s) for s in published}) == len(published)
    assert not any(s.startswith("2026") or "Write a summary paragraph" in s for s in published)
    digest = (settings.output_dir / "digest.md").read_text()
    assert digest.count(SHARED) == 1
    assert "Write a summary paragraph" not in digest and DRAFT_ECHO not in digest
    assert not re.search(r"(?:^|[.!?] )2026:", digest, flags=re.M)
    assert not any(line in digest for line in drafts["list_furniture_lines"])

    check = result.get_asset_check_evaluations()
    [summaries_check] = [
        c for c in check if c.asset_check_key == AssetCheckKey(AssetKey("summaries"), "summaries_only_supported_claims")
    ]
    assert summaries_check.passed
    assert summaries_check.metadata["publication_rules_broken"].value == []
