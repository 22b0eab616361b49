"""Answer schemas a grammar can hold: the bounds of an answer are in the JSON schema the provider receives.

A grammar-constrained server (llama.cpp) writes only what the schema it is sent allows, so a bound
that lives only in a pydantic validator costs the embedded model a re-ask it rarely passes. These
tests check the schema as sent (with a JSON Schema validator, as a grammar would read it) and that
pydantic holds an unconstrained provider to the same bounds.
"""

from typing import ClassVar

import jsonschema
import pytest
from pydantic import BaseModel, ValidationError

from ai_pipelines.definitions import build_resources
from assets.digest.draft_revisions import ClaimRevision, RevisionRound, refine, revision_within
from assets.digest.drafts import citing_within as brief_within
from assets.digest.drafts import claims_from_brief, draft_messages
from resources.gateway.request import response_format_for
from resources.gateway.validation import reasks_for
from resources.verification.citations import citing_within
from tests.test_generation import EVIDENCE, FALSE, TRUE, ScriptedVerifier, brief, checked


def sent_schema(schema: type[BaseModel]) -> dict:
    return response_format_for(schema)["json_schema"]["schema"]


def grammar_allows(schema: type[BaseModel], answer: dict) -> bool:
    try:
        jsonschema.validate(answer, sent_schema(schema))
    except jsonschema.ValidationError:
        return False
    return True


def pydantic_allows(schema: type[BaseModel], answer: dict) -> bool:
    try:
        schema.model_validate(answer)
    except ValidationError:
        return False
    return True


REVISION = "Acme Robotics raised 40 million euros."


@pytest.mark.unit
@pytest.mark.parametrize(
    "answer",
    [
        {"action": "revise", "sentence": REVISION, "evidence": [0]},
        {"action": "revise", "sentence": REVISION, "evidence": [4]},
        {"action": "revise", "sentence": REVISION, "evidence": [1, 4]},
        {"action": "revise", "sentence": REVISION, "evidence": []},
        {"action": "revise", "sentence": REVISION},
        {"action": "revise", "sentence": "", "evidence": [1]},
        {"action": "revise", "sentence": "x" * 401, "evidence": [1]},
        {"action": "revise", "sentence": REVISION, "evidence": [1, 2, 3, 1, 2]},
        {"action": "rewrite", "sentence": REVISION, "evidence": [1]},
    ],
)
def test_the_revision_schema_for_three_items_rejects_what_is_not_a_revision_of_them(answer):
    schema = revision_within(3)
    assert not grammar_allows(schema, answer)
    assert not pydantic_allows(schema, answer)


@pytest.mark.unit
def test_the_revision_schema_allows_a_revision_citing_shown_items_and_a_bare_withdrawal():
    schema = revision_within(3)
    assert schema.__name__ == "ClaimRevision" == response_format_for(schema)["json_schema"]["name"]
    for answer in ({"action": "revise", "sentence": REVISION, "evidence": [1, 3]}, {"action": "withdraw"}):
        assert grammar_allows(schema, answer) and pydantic_allows(schema, answer)
    # A provider that ignores the schema may send the empty fields of a withdrawal: still a withdrawal.
    assert schema.model_validate({"action": "withdraw", "sentence": "", "evidence": []}).action == "withdraw"
    # The numbers allowed are the items shown in that request, no more.
    assert sent_schema(revision_within(5))["anyOf"][0]["properties"]["evidence"]["items"]["enum"] == [1, 2, 3, 4, 5]
    assert not grammar_allows(revision_within(2), {"action": "revise", "sentence": REVISION, "evidence": [3]})
    # With nothing to cite, withdrawing is the only answer the grammar leaves.
    assert not grammar_allows(revision_within(0), {"action": "revise", "sentence": REVISION, "evidence": [1]})
    assert grammar_allows(revision_within(0), {"action": "withdraw"})


class Cited(BaseModel):
    text: str
    evidence: list[int]


class Brief(BaseModel):
    sentences: list[Cited]


@pytest.mark.unit
def test_citations_and_the_least_sentences_are_in_the_schema_the_provider_sees():
    schema = citing_within(Brief, 3, field="evidence", items="evidence items", minimum=2)
    assert schema.__name__ == "Brief"
    ok = {"sentences": [{"text": "One.", "evidence": [1]}, {"text": "Two.", "evidence": [3]}]}
    outside = {"sentences": [{"text": "One.", "evidence": [1]}, {"text": "Two.", "evidence": [4]}]}
    too_few = {"sentences": [{"text": "One.", "evidence": [1]}]}
    assert grammar_allows(schema, ok) and pydantic_allows(schema, ok)
    for answer in (outside, too_few):
        assert not grammar_allows(schema, answer) and not pydantic_allows(schema, answer)


class Grammatical(BaseModel):
    max_reasks: ClassVar[int] = 1
    answer: str


@pytest.mark.unit
def test_a_schema_can_lower_the_gateways_reasks_never_raise_them():
    assert reasks_for(Grammatical, 2) == 1
    assert reasks_for(Grammatical, 0) == 0
    assert reasks_for(Brief, 2) == 2
    assert ClaimRevision.max_reasks == revision_within(3).max_reasks == 1


@pytest.mark.integration
def test_a_revision_that_stays_invalid_is_asked_again_once_and_its_evidence_stands_in(llm, settings):
    model = build_resources(settings)["model"]
    assert model.max_reasks == 2  # the gateway's default; revisions take one
    session = model.open_session()
    llm.scripts["DraftBrief"] = lambda messages: brief((TRUE[0], [1]), (FALSE, [1]), (TRUE[2], [3]))
    [(answer, trace_id)] = session.map_traced_structured(
        [draft_messages("Acme Robotics", EVIDENCE)], brief_within(3), tier="strong"
    )
    drafts = claims_from_brief("Acme Robotics", EVIDENCE, answer, trace_id, 3)
    verifier = ScriptedVerifier(TRUE)
    checks = checked(drafts, verifier)
    llm.scripts["ClaimRevision"] = lambda messages: {"action": "revise", "sentence": REVISION, "evidence": [9]}
    rows: list[RevisionRound] = refine(drafts, checks, llm=session, verifier=verifier, rounds=2, decompose=False)
    assert llm.calls_for("ClaimRevision") == 2  # asked, re-asked once, and not sent again in round 2
    assert [(r.round, r.action) for r in rows] == [(1, "failed"), (3, "extractive")]
    assert rows[0].reason.startswith("answer stayed invalid")
    assert rows[1].after == EVIDENCE[0].sentence and rows[1].verdict == "supported"
