"""The fact-checking component on its own: the CLI on a corpus outside the sample, and the
bundled calibration reproduced on the labelled development set."""

import json
import os
import subprocess
import sys
from pathlib import Path

from ai_pipelines.fact_check import evaluate
from assets.claim_verification import conflict_between, load_calibration
from tests.conftest import DATA

ROOT = Path(__file__).parent.parent


def test_cli_verdicts_every_claim_of_an_external_corpus(tmp_path, llm):
    out = tmp_path / "verdicts.jsonl"
    env = {**os.environ, "AI_PIPELINES_DATA_DIR": str(tmp_path / "data"), "AI_PIPELINES_LLM_BASE_URL": llm.base_url}
    cli = Path(sys.executable).parent / "ai-pipelines"
    result = subprocess.run(
        [str(cli), "fact-check", "--corpus", str(DATA / "external_corpus"), "--claims", str(DATA / "external_claims.jsonl"), "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    claims = [json.loads(line) for line in (DATA / "external_claims.jsonl").read_text().splitlines()]
    verdicts = [json.loads(line) for line in out.read_text().splitlines()]
    assert [v["id"] for v in verdicts] == [c["id"] for c in claims]
    assert all(v["verdict"] in {"supported", "refuted", "not_enough_info"} for v in verdicts)
    assert all(v["evidence"] for v in verdicts if v["verdict"] != "not_enough_info")
    correct = sum(v["verdict"] == c["label"] for v, c in zip(verdicts, claims))
    assert correct >= 9, f"{correct}/12 correct"  # chance is 4/12


def test_cli_rejects_a_malformed_claims_file(tmp_path):
    bad = tmp_path / "claims.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
    cli = Path(sys.executable).parent / "ai-pipelines"
    result = subprocess.run(
        [str(cli), "fact-check", "--corpus", str(DATA / "external_corpus"), "--claims", str(bad), "--out", str(tmp_path / "o.jsonl")],
        cwd=tmp_path, env={**os.environ, "AI_PIPELINES_DATA_DIR": str(tmp_path / "data")}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "claims.jsonl:2" in result.stderr


def test_bundled_calibration_reproduces_on_the_dev_set(tmp_path):
    from ai_pipelines.settings import Settings

    calibration = load_calibration()
    accuracy, macro_f1 = evaluate(Settings(data_dir=tmp_path), ROOT / "assets/sample_corpus", DATA / "fact_check_dev.jsonl")
    assert abs(accuracy - calibration.accuracy) < 0.02 and abs(macro_f1 - calibration.macro_f1) < 0.02
    assert accuracy > 0.6  # three classes: chance is about 0.33


def test_conflicts_need_the_same_subject():
    evidence = "Helios Grid reported revenue of 30 million euros in 2025."
    assert conflict_between("Helios Grid reported revenue of 35 million euros in 2025.", evidence) == "number"
    assert conflict_between("Helios Grid did not report revenue in 2025.", evidence) in {"number", "negation"}
    assert conflict_between("Bluefin Foods hired 35 people in Oslo.", evidence) == ""
