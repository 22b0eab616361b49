"""Fixtures: a deterministic OpenAI-compatible server on 127.0.0.1 and settings that
point the real code location at it and at a temporary data directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from ai_pipelines.backfill import run_over_all_documents
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.settings import Settings
from tests.fake_openai import FakeOpenAI
from tests.smtp_server import SmtpTestServer

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def fake_llm():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def llm(fake_llm: FakeOpenAI) -> FakeOpenAI:
    fake_llm.reset()
    return fake_llm


@pytest.fixture
def second_llm():
    """Another endpoint, for fallback chains."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def smtp_server():
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that records what arrived; script faults with fail_data(n, "reject"|"drop")."""
    with SmtpTestServer() as server:
        yield server


def fake_settings(data_dir: Path, llm: FakeOpenAI) -> Settings:
    """Settings that point the real code location at the fake server and at `data_dir`."""
    return Settings(data_dir=data_dir, llm_base_url=llm.base_url, llm_fast_model="fake-fast", llm_strong_model="fake-strong")


@pytest.fixture
def settings(tmp_path: Path, llm: FakeOpenAI) -> Settings:
    return fake_settings(tmp_path / "data", llm)


def run_digest_job(settings: Settings, instance: DagsterInstance | None = None) -> ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def("digest_job")
    pipeline = build_resources(settings)["pipeline"]
    return run_over_all_documents(job, instance or DagsterInstance.ephemeral(), pipeline, raise_on_error=False)
