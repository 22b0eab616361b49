"""The code location: assets, checks, jobs, schedules and resources, configured from settings."""

from __future__ import annotations

import hashlib
import json
import os

from dagster import (
    AssetsDefinition,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    FilesystemIOManager,
    in_process_executor,
    multiprocess_executor,
)

from ai_pipelines.settings import ENV_PREFIX, Settings, load_settings
from assets import ALL_ASSET_CHECKS, ALL_ASSETS, PipelineConfig
from resources import EmbeddingsResource, Endpoint, ModelResource, VectorStoreResource, WarehouseIOManager
from sensors import ALL_JOBS, digest_schedule, inbox_sensor, index_automation, run_failure_recorder


def _secret(name: str, value: str):
    """Keys set in the environment stay EnvVars, so the UI never displays them."""
    variable = ENV_PREFIX + name
    return EnvVar(variable) if os.environ.get(variable) else value


def build_resources(settings: Settings) -> dict[str, object]:
    embeddings = EmbeddingsResource(
        base_url=settings.embeddings_base_url,
        api_key=_secret("EMBEDDINGS_API_KEY", settings.embeddings_api_key),
        model=settings.embeddings_model,
    )
    return {
        "model": ModelResource(
            base_url=settings.llm_base_url,
            api_key=_secret("LLM_API_KEY", settings.llm_api_key),
            fast_model=settings.llm_fast_model,
            strong_model=settings.llm_strong_model,
            timeout_seconds=settings.llm_timeout_seconds,
            fallbacks=[Endpoint.model_validate(e) for e in settings.llm_fallbacks],
            max_retries=settings.llm_max_retries,
            breaker_failures=settings.llm_breaker_failures,
            breaker_cooldown_seconds=settings.llm_breaker_cooldown_seconds,
            cache_path=settings.response_cache_location if settings.llm_cache else "",
            trace_path=settings.trace_location,
            trace_redaction=settings.llm_trace_redaction,
            otlp_endpoint=settings.otlp_endpoint,
            budget_usd=settings.llm_budget_usd,
            budget_tokens=settings.llm_budget_tokens,
            max_concurrency=settings.llm_max_concurrency,
            input_price_per_mtok=settings.llm_input_price_per_mtok,
            output_price_per_mtok=settings.llm_output_price_per_mtok,
        ),
        "vector_store": VectorStoreResource(
            embeddings=embeddings,
            persist_dir=str(settings.chroma_dir),
            host=settings.chroma_host,
            port=settings.chroma_port,
            ssl=settings.chroma_ssl,
        ),
        "pipeline": PipelineConfig(
            corpus_dir=str(settings.corpus_dir) if settings.corpus_dir else PipelineConfig().corpus_dir,
            inbox_dir=str(settings.inbox_dir or settings.data_dir / "inbox"),
            output_dir=str(settings.output_dir),
            state_url=settings.postgres_url,
            topics=settings.topics,
            max_topics=settings.max_topics,
            claims_per_draft=settings.claims_per_draft,
            max_quarantine_share=settings.max_quarantine_share,
            min_signal_validity=settings.min_signal_validity,
            max_unsupported_share=settings.max_unsupported_share,
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
    return Definitions(
        assets=with_model_versions(ALL_ASSETS, settings),
        asset_checks=ALL_ASSET_CHECKS,
        jobs=ALL_JOBS,
        schedules=[digest_schedule(settings.digest_cron, settings.timezone)],
        sensors=[inbox_sensor, index_automation, run_failure_recorder(str(settings.output_dir / "run_failures.jsonl"), settings.failure_webhook_url)],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


defs = build_definitions(load_settings())
