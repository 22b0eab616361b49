"""`ai-pipelines run` and `ai-pipelines triage` with their output going to a pipe or a log file, as
in CI or `make run > run.log`: a line per stage with its counts, and no library beta warning
in the output; those are kept in the data directory's log instead."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, process_environment
from tests.triage_helpers import BUNDLED_TICKETS

pytestmark = pytest.mark.integration

STAGE = re.compile(r"^stage +\d+  (\S+): (.*) \(\d+ s\)$", flags=re.M)


def stages(output: str) -> dict[str, str]:
    return dict(STAGE.findall(output))


def assert_no_library_notice(output: str) -> None:
    for notice in ("BetaWarning", "PreviewWarning", "is currently in beta", "is currently in preview"):
        assert notice not in output, output


def test_a_run_into_a_pipe_prints_a_line_per_stage_and_no_beta_warning(tmp_path, settings, llm):
    result = subprocess.run(
        [str(CLI), "run"],
        cwd=tmp_path,
        env=process_environment(settings),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = stages(result.stdout)
    assert {"signals", "drafts", "fact_checks", "summaries"} <= set(lines), result.stdout
    print("\nSTAGE LINES:\n" + "\n".join(line for line in result.stdout.splitlines() if STAGE.match(line)))
    # 33 documents in their batches (3 of them quarantined, which have no signals and ask no
    # model), one request per readable one.
    assert re.fullmatch(r"\d+ materialized, 30 documents, 30 model requests", lines["signals"]), lines["signals"]
    assert any(re.match(r"checks \d+ passed", counts) for counts in lines.values()), lines
    assert not any("FAILED" in counts for counts in lines.values()), lines
    assert "\r" not in result.stdout + result.stderr  # no progress bar redrawn in place
    assert_no_library_notice(output)
    # The notices are kept where a person (or whoever upgrades Dagster) can read them.
    log = Path(settings.data_dir) / "logs" / "library_warnings.log"
    assert "BetaWarning" in log.read_text()


def test_triage_into_a_pipe_prints_a_line_per_stage(tmp_path, settings, llm):
    folder = tmp_path / "tickets"
    folder.mkdir()
    for ticket in ["T001", "T002"]:
        (folder / f"{ticket}.json").write_text((BUNDLED_TICKETS / f"{ticket}.json").read_text())
    environment = process_environment(
        settings,
        AI_PIPELINES_TICKETS_DIR=str(folder),
        AI_PIPELINES_TICKET_INBOX_DIR=str(tmp_path / "inbox"),
        AI_PIPELINES_EMBEDDINGS_BASE_URL=llm.base_url,
        AI_PIPELINES_EMBEDDINGS_MODEL="fake-embedder",
    )
    result = subprocess.run(
        [str(CLI), "triage"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output  # a check may block; the lines are what is tested here
    lines = stages(result.stdout)
    assert "support_tickets" in lines and "ticket_routes" in lines, result.stdout
    assert lines["support_tickets"].startswith("2 materialized"), lines["support_tickets"]
    assert_no_library_notice(output)
