"""`ai-pipelines calibrate --judge` decides on the public held-out sets whether a judge helps.

The fake server plays two judges on a small sample of the committed public sets (the shortest
articles that give each set both labels): one that answers every labelled claim's gold label
with a verbatim quote, and one that answers "supported" to everything. The command prints the
verifier alone beside the verifier + judge on the same claims and says whether the judge helps;
`--write` writes only the judge that helps, and the verifier counts a judge as a feature only
under a calibration that records it helped. The embedded model is never a judge. Real embedder,
real verifier; about three minutes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

import resources.verification.claim_verification
from ai_pipelines.calibration import DATA_DIR
from ai_pipelines.cli import main
from ai_pipelines.settings import Settings
from resources.documents.text import normalize
from resources.verification.claim_verification import (
    Calibration,
    Claim,
    ClaimVerifier,
    calibration_path,
    load_calibration,
)
from resources.verification.fitting.labelled_sets import FIT_SETS, HELDOUT_SETS, UNSEEN_SETS, Record, load_set
from tests.conftest import fake_settings, indexed_corpus
from tests.fact_check_judges import best_line, claim_of
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.integration

PER_LABEL = 8


def small_sample(name: str) -> list[Record]:
    """A set cut to its shortest articles until it holds `PER_LABEL` labelled claims of each label:
    the first articles of some sets hold one label only, and a judge cannot be measured on those."""
    articles: dict[str, list[Record]] = defaultdict(list)
    for record in load_set(DATA_DIR, name):
        articles[record.article_id].append(record)
    kept: list[Record] = []
    counts: Counter[str] = Counter()
    for records in sorted(articles.values(), key=lambda rows: len(rows[0].article)):
        labels = Counter(r.label for r in records if r.labelled)
        if any(counts[label] < PER_LABEL and labels[label] for label in ("supported", "unsupported")):
            kept += records
            counts += labels
        if min(counts["supported"], counts["unsupported"]) >= PER_LABEL:
            break
    return kept


SAMPLE = {name: small_sample(name) for name in (*FIT_SETS, *HELDOUT_SETS)}
GOLD = {normalize(r.claim): r.label for records in SAMPLE.values() for r in records if r.labelled}
CORPUS = {
    "riga-000": "Quanta Ledger will open an office in Riga in May 2027 and hire 60 engineers.",
    "card-000": "The Quanta Ledger card has no monthly fee and pays 1 percent cash back on supplier payments.",
}
# About nothing the corpus says: no evidence states it, so the verifier alone finds not enough info.
UNRELATED = Claim(id="unrelated", text="The Lakeport ferry carried 12 thousand passengers across the bay in March.")


def gold_judge(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A capable judge: each benchmark claim's gold label, quoting its evidence verbatim; any other
    claim it "refutes" with words the evidence does not hold, an answer that must not count."""
    label = GOLD.get(normalize(claim_of(messages)))
    if label is None:
        return {"verdict": "refuted", "quote": "the ferry never sailed that spring"}
    return {"verdict": "supported" if label == "supported" else "refuted", "quote": best_line(messages)}


def always_supported(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"verdict": "supported", "quote": best_line(messages)}


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the module: the two runs then embed the sample's sentences once. The
    response cache stays off, so neither judge's answers reach the other."""
    return tmp_path_factory.mktemp("calibrate") / "data"


@pytest.fixture(scope="module")
def sample_sets(shared_data: Path) -> Path:
    folder = shared_data.parent / "factcheck"
    folder.mkdir(exist_ok=True)
    for name, records in SAMPLE.items():
        (folder / f"{name}.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in records))
    return folder


@pytest.fixture
def calibrate(sample_sets: Path) -> list[str]:
    return ["calibrate", "--data", str(sample_sets), "--judge-claims", str(2 * PER_LABEL)]


@pytest.fixture
def configured(shared_data: Path, llm: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The command's environment on the fake endpoint, with calibrations written to the test's folder."""
    settings = fake_settings(shared_data, llm).model_copy(update={"llm_cache": False})
    for name, value in {
        "AI_PIPELINES_DATA_DIR": str(shared_data),
        "AI_PIPELINES_LLM_BASE_URL": llm.base_url,
        "AI_PIPELINES_LLM_FAST_MODEL": settings.llm_fast_model,
        "AI_PIPELINES_LLM_STRONG_MODEL": settings.llm_strong_model,
        "AI_PIPELINES_LLM_CACHE": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(resources.verification.claim_verification, "CALIBRATION_DIR", tmp_path / "calibration")
    (tmp_path / "calibration").mkdir()
    return settings


def verifier_of(settings: Settings) -> ClaimVerifier:
    model, vector_store = indexed_corpus(settings, "judged", CORPUS)
    return ClaimVerifier(vector_store, "judged", llm=model.open_session())


def judge_file(settings: Settings) -> Path:
    verifier = verifier_of(settings)
    return calibration_path(verifier.fingerprint)


def test_a_judge_that_helps_is_written_and_counted_as_a_feature(configured, calibrate, llm, capsys):
    llm.scripts["JudgeAnswer"] = gold_judge
    assert main([*calibrate, "--judge", "--write"]) == 0
    out = capsys.readouterr().out

    assert "Verifier alone and verifier + judge on the same fixed sample of each held-out set" in out
    assert "| set | judged claims | verifier on them | verifier + judge | gain |" in out
    assert f"| {UNSEEN_SETS[0]} (unseen: not in the decision) |" in out
    assert "\njudge decision: helps: " in out, out
    path = judge_file(configured)
    assert f"written to {path}" in out
    written = Calibration.model_validate_json(path.read_text())
    assert written.judge and written.judge_helps and written.judge_reason.startswith("helps: ")
    assert set(written.heldout) == set(written.heldout_without_judge) and written.heldout
    assert UNSEEN_SETS[0] not in written.judge_reason  # shown, never part of the decision
    seen = [name for name in written.heldout if name not in UNSEEN_SETS]
    gain = sum(written.heldout[n] - written.heldout_without_judge[n] for n in seen) / len(seen)
    assert gain >= 0.05

    verifier = verifier_of(configured)
    assert verifier.calibration == written and verifier.judge_mode() == "feature"
    # Its answer on a claim nothing states is an unverified "refuted": recorded, and it does not
    # make a claim with not enough info refuted.
    [explanation] = verifier.explain([UNRELATED])
    assert explanation.judge is not None and explanation.judge.mode == "feature"
    assert explanation.verdict.judge == "refuted" and not explanation.verdict.judge_counted
    assert explanation.decision == "not_enough_info", explanation.to_text()

    # A judge calibration that does not record whether its judge helps (an older file) proves nothing.
    path.write_text(written.model_dump_json(exclude={"judge_helps"}))
    older = verifier_of(configured)
    assert not older.calibration.judge and not older.judge_is_feature
    assert older.judge_mode() == older.judge_calibration().mode != "feature"  # the sample check instead
    with pytest.raises(ValueError, match="does not record that the judge helps"):
        ClaimVerifier(older.vector_store, "judged", llm=older.llm, calibration=load_calibration(older.fingerprint))


def test_a_judge_that_does_not_help_is_not_written_nor_counted(configured, calibrate, llm, capsys):
    llm.scripts["JudgeAnswer"] = always_supported
    assert main([*calibrate, "--judge", "--write"]) == 0
    out = capsys.readouterr().out

    assert "| set | judged claims | verifier on them | verifier + judge | gain |" in out
    assert "\njudge decision: unproven: " in out, out
    assert "not written: a judge calibration whose judge does not help is never used" in out
    assert "written to" not in out
    path = judge_file(configured)
    assert not path.exists() and not list(path.parent.iterdir())

    verifier = verifier_of(configured)
    assert not verifier.calibration.judge and verifier.judge_mode() != "feature"
    assert verifier.judge_calibration().mode == "none"  # nor does it prove itself on the sample


def test_the_embedded_model_is_never_calibrated_as_judge(configured, monkeypatch, capsys):
    assert main(["calibrate", "--judge", "--write", "--bundled"]) == 2
    assert "--bundled writes the embedded default, which is never a judge calibration" in capsys.readouterr().err

    monkeypatch.setenv("AI_PIPELINES_LLM_BASE_URL", "")
    assert main(["calibrate", "--judge"]) == 2
    assert "the embedded model is never a judge" in capsys.readouterr().err
    assert not list(resources.verification.claim_verification.CALIBRATION_DIR.iterdir())
