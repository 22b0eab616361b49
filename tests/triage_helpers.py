"""Running the triage job in tests: settings on the fake model server and a real SMTP
server, a chosen subset of the bundled tickets, and the warehouse tables read back."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.settings import Settings
from assets.components.partitions import TICKETS
from assets.triage.tickets import scan_tickets
from resources.pipeline_config import SUPPORT_DESK_DIR
from tests.fake_openai import FakeOpenAI
from tests.smtp_server import SmtpTestServer

BUNDLED_TICKETS = SUPPORT_DESK_DIR / "tickets"


def triage_settings(
    tmp_path: Path,
    llm: FakeOpenAI,
    smtp: SmtpTestServer | None = None,
    tickets: list[str] | None = None,
    **extra: object,
) -> Settings:
    """The code location on the fake server (chat and embeddings), with the given bundled
    tickets (all when None) and replies to `smtp` (a Maildir folder when None)."""
    folder = BUNDLED_TICKETS
    if tickets is not None:
        folder = tmp_path / "tickets"
        folder.mkdir(parents=True, exist_ok=True)
        for ticket in tickets:
            shutil.copy(BUNDLED_TICKETS / f"{ticket}.json", folder / f"{ticket}.json")
    mail = {"smtp_host": "127.0.0.1", "smtp_port": smtp.port} if smtp is not None else {}
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        llm_base_url=llm.base_url,
        llm_fast_model="fake-fast",
        llm_strong_model="fake-strong",
        embeddings_base_url=llm.base_url,
        embeddings_model="fake-embedder",
        tickets_dir=folder,
        **mail,
        **extra,  # type: ignore[arg-type]
    )


def run_triage_job(
    settings: Settings,
    instance: DagsterInstance | None = None,
    job: str = "triage_job",
    selection: list[str] | None = None,
    run_config: dict | None = None,
) -> tuple[ExecuteInProcessResult, DagsterInstance]:
    """One run of `job` over every ticket file, as `ai-pipelines triage` launches it."""
    instance = instance or DagsterInstance.ephemeral()
    keys = sorted(scan_tickets(build_resources(settings)["triage"]))
    known = set(instance.get_dynamic_partitions(TICKETS.name))
    instance.add_dynamic_partitions(TICKETS.name, [k for k in keys if k not in known])
    result = (
        build_definitions(settings)
        .resolve_job_def(job)
        .execute_in_process(
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
            asset_selection=[AssetKey(name) for name in selection] if selection else None,
            run_config=run_config,
            raise_on_error=False,
        )
    )
    return result, instance


def table(settings: Settings, name: str) -> pd.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        return connection.execute(f"select * from ai_pipelines.{name} order by ticket").df()


def by_ticket(frame: pd.DataFrame) -> dict[str, dict]:
    return {row["ticket"].split("/")[-1].removesuffix(".json"): row for row in frame.to_dict(orient="records")}
