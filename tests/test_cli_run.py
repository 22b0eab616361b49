"""`ai-pipelines run`, as a person runs it: exit code, output locations, and what blocked."""

import json
import os
import pty
import subprocess
from types import SimpleNamespace

import pytest

from resources.documents.batches import batch_of
from tests.conftest import CLI, process_environment, warehouse_query
from tests.fake_openai import extract_signals

pytestmark = pytest.mark.integration


def run_cli(settings, tmp_path, tty: bool = False, **env):
    environment = process_environment(settings, **env)
    if not tty:
        return subprocess.run(
            [str(CLI), "run"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
        )
    # As in a terminal: stdout and stderr are a pseudo-terminal.
    primary, secondary = pty.openpty()
    process = subprocess.Popen([str(CLI), "run"], cwd=tmp_path, env=environment, stdout=secondary, stderr=secondary)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    return SimpleNamespace(returncode=process.wait(timeout=600), stdout=text, stderr=text)


def test_run_names_where_every_output_lives(tmp_path, settings, llm):
    result = run_cli(settings, tmp_path, tty=True)
    assert result.returncode == 0, result.stdout + result.stderr
    # In a terminal, each fan-out draws a progress bar that ends full.
    assert "\rsignals      [" in result.stdout and "] 30/30 " in result.stdout
    data = (tmp_path / "data").resolve()
    for asset in ["source_documents", "chunks", "signals", "drafts", "fact_checks", "summaries"]:
        assert f"table ai_pipelines.{asset} in {data / 'warehouse.duckdb'}" in result.stdout
    assert str(data / "chroma") in result.stdout and str(data / "outputs" / "digest.md") in result.stdout
    assert (data / "dagster_home" / "dagster.yaml").exists()
    # Run again with nothing changed: nothing to materialize, no run, success.
    again = run_cli(settings, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Up to date: all 33 documents and every downstream asset are up to date" in again.stdout
    # One more file in the inbox: that document and what depends on it.
    (data / "inbox").mkdir(exist_ok=True)
    (data / "inbox" / "memo.md").write_text(
        "# Memo\nDate: 2026-03-02\n\nHelios Grid opened a second plant in Seville in March 2026.\n"
    )
    llm.calls.clear()
    added = run_cli(settings, tmp_path)
    assert added.returncode == 0, added.stdout + added.stderr
    assert "Materialized: 1 of 34 documents new or changed, in 1 batch." in added.stdout
    assert sum(1 for c in llm.calls if c["schema"] == "ExtractedSignals") == 1


def document_cli(settings, tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "document", *arguments],
        cwd=tmp_path,
        env=process_environment(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_documents_own_history_is_reachable_by_its_key_or_id_after_a_batched_run(tmp_path, settings, llm):
    assert run_cli(settings, tmp_path).returncode == 0
    # A quarantined file: its reason, by its key.
    scanned = document_cli(settings, tmp_path, "corpus/31-scanned-upload.pdf")
    assert scanned.returncode == 0, scanned.stderr
    assert "status: quarantined: " in scanned.stdout and "quarantine reason: " in scanned.stdout
    # A document a published verdict rests on: its signals and that verdict, by its content id.
    [(chunk_id, claim_id)] = warehouse_query(
        settings,
        "select json_extract_string(evidence_chunk_ids, '$[0]'), claim_id from ai_pipelines.fact_checks "
        "where verdict = 'supported' and json_array_length(evidence_chunk_ids) > 0 order by claim_id limit 1",
    )
    [(key, doc_id)] = warehouse_query(
        settings, f"select document, doc_id from ai_pipelines.chunks where chunk_id = '{chunk_id}'"
    )
    cited = document_cli(settings, tmp_path, doc_id[:10], "--json")
    assert cited.returncode == 0, cited.stderr
    history = json.loads(cited.stdout)
    assert history["document"] == key and history["batch"] == batch_of(key) and history["status"] == "ingested"
    assert history["signals"]["status"] in ("valid", "ungrounded") and history["chunks"] > 0
    assert claim_id in {v["claim_id"] for v in history["verdicts"] if v["role"] == "evidence"}
    # Its batch's materializations, each naming the content the document had then.
    assert {m["asset"] for m in history["materializations"]} == {"source_documents", "signals"}
    assert all(m["content_hash"] == doc_id for m in history["materializations"] if m["asset"] == "source_documents")
    # A file that arrives, then is edited: two materializations of its batch, each with its content.
    memo = (tmp_path / "data" / "inbox" / "memo.md").resolve()
    memo.parent.mkdir(exist_ok=True)
    memo.write_text("# Memo\nDate: 2026-03-02\n\nHelios Grid opened a second plant in Seville in March 2026.\n")
    assert run_cli(settings, tmp_path).returncode == 0
    memo.write_text(memo.read_text() + "Helios Grid also named a new chair in March 2026.\n")
    assert run_cli(settings, tmp_path).returncode == 0
    edited = json.loads(document_cli(settings, tmp_path, "inbox/memo.md", "--json").stdout)
    sources = [m for m in edited["materializations"] if m["asset"] == "source_documents"]
    assert len(sources) == 2 and sources[0]["content_hash"] == edited["doc_id"] != sources[1]["content_hash"]
    # What is not there says so, with a non-zero exit.
    missing = document_cli(settings, tmp_path, "corpus/no-such-file.md")
    assert missing.returncode == 1 and "no document 'corpus/no-such-file.md'" in missing.stderr


def test_run_exits_non_zero_and_says_which_check_blocked_what(tmp_path, settings, llm):
    llm.scripts["ExtractedSignals"] = lambda m: "{" if "Helios Grid" in m[0]["content"] else extract_signals(m)
    result = run_cli(settings, tmp_path, AI_PIPELINES_MIN_SIGNAL_VALIDITY="0.9")
    assert result.returncode == 1
    assert "\r" not in result.stderr  # no progress bar when the output is not a terminal
    assert "BLOCKED: check 'signal_validity' failed on asset 'signals'" in result.stdout
    assert "Not materialized: digest_report, draft_revisions, drafts, fact_checks, summaries" in result.stdout
