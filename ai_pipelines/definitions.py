"""The code location: assets, checks, jobs, schedules and resources, configured from settings."""

from __future__ import annotations

import hashlib
import json
import os
import re

from dagster import (
    AssetsDefinition,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    FilesystemIOManager,
    in_process_executor,
    multiprocess_executor,
)

from ai_pipelines.instance import batch_event_writes
from ai_pipelines.settings import ENV_PREFIX, Settings, load_settings
from assets import ALL_ASSET_CHECKS, ALL_ASSETS, PipelineConfig, TriageConfig
from assets.config import SUPPORT_DESK_DIR
from resources import EmbeddingsResource, Endpoint, ModelResource, VectorStoreResource, WarehouseIOManager
from resources.mailer import MailerResource
from resources.support_desk import SupportDeskResource
from sensors import ALL_JOBS, digest_schedule, inbox_sensor, index_automation, run_failure_recorder, ticket_inbox_sensor


def _secret(variable: str, value: str) -> EnvVar | str:
    """A secret as a Dagster `EnvVar`, so that snapshots in the instance database and the
    UI's resource config hold the variable's name, never its value.

    A value that is not in the process environment under `variable` (read from `.env`,
    given in the fallbacks JSON, or passed to `Settings` directly) is exported there first.
    Every Dagster process that runs this code location (webserver, daemon, code server,
    run and step workers) loads these definitions, so each one can resolve it.
    """
    if not value:
        return ""
    if os.environ.get(variable) != value:
        os.environ[variable] = value
    return EnvVar(variable)


def fallback_key_variable(name: str) -> str:
    """Where a fallback endpoint's literal `api_key` is exported: AI_PIPELINES_LLM_FALLBACK_<NAME>_API_KEY."""
    return f"{ENV_PREFIX}LLM_FALLBACK_{re.sub(r'[^A-Z0-9]+', '_', name.upper()).strip('_')}_API_KEY"


def _fallback(options: dict[str, object]) -> Endpoint:
    """One fallback endpoint from the JSON setting, its key given as `api_key_env` (the name of
    a variable that holds it, resolved by Dagster in each process) or `api_key` (a literal, exported).

    Dagster keeps an `EnvVar` inside the nested `fallbacks: list[Endpoint]` config (pythonic
    config restores them after pydantic validation, `ensure_env_vars_set_post_init`, and
    snapshots them as {"env": name}); tests/test_secrets.py holds it to that.
    """
    fields = dict(options)
    variable = str(fields.pop("api_key_env", "") or "")
    if variable:
        fields["api_key"] = EnvVar(variable)
    elif fields.get("api_key"):
        fields["api_key"] = _secret(fallback_key_variable(str(fields.get("name", ""))), str(fields["api_key"]))
    return Endpoint(**fields)


def _state_location(settings: Settings, location: str) -> EnvVar | str:
    """The Postgres URL (it may hold a password) as a secret; a file path as it is."""
    return _secret(ENV_PREFIX + "POSTGRES_URL", location) if settings.postgres_url and location == settings.postgres_url else location


def build_resources(settings: Settings) -> dict[str, object]:
    embeddings = EmbeddingsResource(
        base_url=settings.embeddings_base_url,
        api_key=_secret(ENV_PREFIX + "EMBEDDINGS_API_KEY", settings.embeddings_api_key),
        model=settings.embeddings_model,
    )
    vector_store = VectorStoreResource(
        embeddings=embeddings,
        persist_dir=str(settings.chroma_dir),
        host=settings.chroma_host,
        port=settings.chroma_port,
        ssl=settings.chroma_ssl,
    )
    return {
        "model": ModelResource(
            base_url=settings.llm_base_url,
            api_key=_secret(ENV_PREFIX + "LLM_API_KEY", settings.llm_api_key),
            fast_model=settings.llm_fast_model,
            strong_model=settings.llm_strong_model,
            timeout_seconds=settings.llm_timeout_seconds,
            fallbacks=[_fallback(e) for e in settings.llm_fallbacks],
            max_retries=settings.llm_max_retries,
            breaker_failures=settings.llm_breaker_failures,
            breaker_cooldown_seconds=settings.llm_breaker_cooldown_seconds,
            cache_path=_state_location(settings, settings.response_cache_location) if settings.llm_cache else "",
            trace_path=_state_location(settings, settings.trace_location),
            trace_redaction=settings.llm_trace_redaction,
            otlp_endpoint=settings.otlp_endpoint,
            budget_usd=settings.llm_budget_usd,
            budget_tokens=settings.llm_budget_tokens,
            max_concurrency=settings.llm_max_concurrency,
            input_price_per_mtok=settings.llm_input_price_per_mtok,
            output_price_per_mtok=settings.llm_output_price_per_mtok,
            strong_input_price_per_mtok=settings.llm_strong_input_price_per_mtok,
            strong_output_price_per_mtok=settings.llm_strong_output_price_per_mtok,
        ),
        "vector_store": vector_store,
        "support_desk": SupportDeskResource(
            data_dir=str(settings.support_desk_dir or SUPPORT_DESK_DIR),
            vector_store=vector_store,
            refund_limit_eur=settings.refund_limit_eur,
        ),
        "triage": TriageConfig(
            tickets_dir=str(settings.tickets_dir or SUPPORT_DESK_DIR / "tickets"),
            ticket_inbox_dir=str(settings.ticket_inbox_dir or settings.data_dir / "ticket_inbox"),
            min_route_confidence=settings.route_min_confidence,
            agent_max_iterations=settings.agent_max_iterations,
            agent_max_tool_calls=settings.agent_max_tool_calls,
            agent_max_tokens=settings.agent_max_tokens,
            agent_max_seconds=settings.agent_max_seconds,
            agent_mcp_servers_json=json.dumps(settings.agent_mcp_servers),
            max_workers=settings.triage_max_workers,
            max_refinement_rounds=settings.reply_refinement_rounds,
            memory_budget_chars=settings.memory_budget_chars,
            memory_window_turns=settings.memory_window_turns,
            refund_limit_eur=settings.refund_limit_eur,
        ),
        "mailer": MailerResource(
            smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port,
            smtp_username=settings.smtp_username,
            smtp_password=_secret(ENV_PREFIX + "SMTP_PASSWORD", settings.smtp_password),
            smtp_security=settings.smtp_security,
            maildir_path=str(settings.output_dir / "outbox"),
            sender=settings.mail_sender,
        ),
        "pipeline": PipelineConfig(
            corpus_dir=str(settings.corpus_dir) if settings.corpus_dir else PipelineConfig().corpus_dir,
            inbox_dir=str(settings.inbox_dir or settings.data_dir / "inbox"),
            output_dir=str(settings.output_dir),
            state_url=_state_location(settings, settings.postgres_url),
            max_document_bytes=settings.max_document_bytes,
            max_document_chars=settings.max_document_chars,
            max_chunk_chars=settings.max_chunk_chars,
            screen_with_model=settings.screens_with_model,
            topics=settings.topics,
            max_topics=settings.max_topics,
            claims_per_draft=settings.claims_per_draft,
            decompose_claims=settings.decomposes_claims,
            max_refinement_rounds=settings.max_refinement_rounds,
            max_quarantine_share=settings.max_quarantine_share,
            min_signal_validity=settings.min_signal_validity,
            max_unsupported_share=settings.max_unsupported_share,
            max_failed_request_share=settings.max_failed_request_share,
        ),
        "warehouse_io_manager": WarehouseIOManager(
            database=str(settings.warehouse_path), schema="ai_pipelines"
        ),
        "io_manager": FilesystemIOManager(base_dir=str(settings.data_dir / "storage")),
    }


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def model_fingerprints(settings: Settings) -> dict[str, str]:
    """Per resource, the model configuration its users' outputs depend on."""
    return {
        "model": _fingerprint(
            [settings.llm_fast_model, settings.llm_strong_model]
            + [[e.get("fast_model"), e.get("strong_model")] for e in settings.llm_fallbacks]
        ),
        "vector_store": _fingerprint(settings.embeddings_model),
    }


def with_model_versions(assets: list[AssetsDefinition], settings: Settings) -> list[AssetsDefinition]:
    """Appends the model fingerprints of the resources an asset uses to its code version,
    so that switching a model marks exactly the assets whose outputs it shapes stale."""
    fingerprints = model_fingerprints(settings)
    versioned = []
    for asset in assets:
        suffix = "".join(f"-{fingerprints[k]}" for k in sorted(fingerprints.keys() & asset.required_resource_keys))
        versioned.append(
            asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}{suffix}"))
            if suffix
            else asset
        )
    return versioned


def build_executor(settings: Settings) -> ExecutorDefinition:
    """In process by default, so every step shares one embedded model server. Celery and
    multiprocess give each step its own process: meant for remote model endpoints."""
    if settings.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured({"broker": settings.celery_broker, "backend": settings.celery_backend})
    if settings.executor == "multiprocess":
        return multiprocess_executor
    return in_process_executor


def build_definitions(settings: Settings) -> Definitions:
    batch_event_writes(settings.event_batch_size)
    return Definitions(
        assets=with_model_versions(ALL_ASSETS, settings),
        asset_checks=ALL_ASSET_CHECKS,
        jobs=ALL_JOBS,
        schedules=[digest_schedule(settings.digest_cron, settings.timezone)],
        sensors=[inbox_sensor, ticket_inbox_sensor, index_automation, run_failure_recorder(str(settings.output_dir / "run_failures.jsonl"), settings.failure_webhook_url)],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


defs = build_definitions(load_settings())
