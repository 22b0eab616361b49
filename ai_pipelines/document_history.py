"""What happened to one document: `ai-pipelines document <key or id>`.

Dagster orchestrates document batches, so its UI shows a batch, not a document. A person
asking about one file needs its own story: whether it was ingested or quarantined and
why, its signals, the verdicts that cite it, and every run that materialized its batch
with the content it had then. The tables hold the first three (each row names its
document and batch); the batch's materializations hold the last (each records its
documents' content hashes and statuses). This module joins them for one document.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from pydantic import BaseModel

from assets.digest.ingestion import CONTENT_HASHES
from resources.documents.batches import batch_of

SCHEMA = "ai_pipelines"
# How many of the batch's materializations per asset the history reads, newest first.
HISTORY_LIMIT = 50


class DocumentNotFound(LookupError):
    pass


class Materialization(BaseModel):
    """One materialization of the document's batch, as it concerned this document."""

    asset: str
    run_id: str
    timestamp: float
    status: str
    content_hash: str = ""


class Verdict(BaseModel):
    claim_id: str
    topic: str
    claim: str
    verdict: str
    role: str  # evidence (the verdict rests on the document) or conflict (the document contradicts it)


class DocumentHistory(BaseModel):
    document: str
    batch: str
    doc_id: str = ""
    status: str  # ingested, quarantined: <kind>, or not ingested yet
    title: str = ""
    quarantine_reason: str = ""
    chunks: int = 0
    signals: dict[str, object] = {}
    verdicts: list[Verdict] = []
    materializations: list[Materialization] = []

    def render(self) -> str:
        lines = [f"{self.document}  (batch {self.batch}, id {self.doc_id or '-'})", f"status: {self.status}"]
        if self.title:
            lines.append(f"title: {self.title}")
        if self.quarantine_reason:
            lines.append(f"quarantine reason: {self.quarantine_reason}")
        lines.append(f"chunks: {self.chunks}")
        if self.signals:
            lines.append("signals: " + json.dumps(self.signals, sort_keys=True))
        lines.append(f"verdicts citing it: {len(self.verdicts)}")
        lines += [f"  {v.verdict:<16} {v.role:<8} {v.claim_id}  {v.claim[:100]}" for v in self.verdicts]
        lines.append(f"materializations of its batch that included it: {len(self.materializations)}")
        lines += [f"  {m.asset:<18} run {m.run_id[:8]}  {m.status}  {m.content_hash}" for m in self.materializations]
        return "\n".join(lines)


def _rows(db: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    cursor = db.execute(sql, params)
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _tables(db: duckdb.DuckDBPyConnection) -> set[str]:
    return {
        name
        for (name,) in db.execute(
            "select table_name from information_schema.tables where table_schema = ?", [SCHEMA]
        ).fetchall()
    }


def _resolve(db: duckdb.DuckDBPyConnection, tables: set[str], wanted: str) -> str:
    """The document key for a key or a content id (or a prefix of one, of at least 6 digits)."""
    for table, column in (("source_documents", "doc_id"), ("quarantined_documents", "content_sha256")):
        if table not in tables:
            continue
        found = db.execute(
            f"select distinct document from {SCHEMA}.{table} where document = ? or (length(?) >= 6 and {column} like ?)",
            [wanted, wanted, wanted + "%"],
        ).fetchall()
        if len(found) > 1:
            raise DocumentNotFound(f"{wanted!r} matches {len(found)} documents; give more of the id or the key")
        if found:
            return found[0][0]
    return wanted


def _batch_history(instance: DagsterInstance, document: str, batch: str) -> list[Materialization]:
    history = []
    for asset in ("source_documents", "signals"):
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[batch]), limit=HISTORY_LIMIT
        ).records
        for record in records:
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            statuses = metadata.get("document_status")
            status = statuses.value.get(document) if statuses is not None and isinstance(statuses.value, dict) else None
            if status is None:
                continue
            hashes = metadata.get(CONTENT_HASHES)
            recorded = hashes.value.get(document, "") if hashes is not None and isinstance(hashes.value, dict) else ""
            history.append(
                Materialization(
                    asset=asset, run_id=record.run_id, timestamp=record.timestamp, status=status, content_hash=recorded
                )
            )
    return sorted(history, key=lambda m: (m.timestamp, m.asset), reverse=True)


def document_history(warehouse: Path, instance: DagsterInstance, wanted: str) -> DocumentHistory:
    """The history of the document whose key (or content id) is `wanted`."""
    if not warehouse.exists():
        raise DocumentNotFound(f"no warehouse at {warehouse}: nothing has been materialized yet")
    try:
        db = duckdb.connect(str(warehouse), read_only=True)
    except duckdb.IOException as exc:
        raise DocumentNotFound(f"the warehouse {warehouse} is in use by a run ({exc}); try again when it ends") from exc
    with db:
        tables = _tables(db)
        document = _resolve(db, tables, wanted)
        batch = batch_of(document)

        def one(table: str) -> dict | None:
            if table not in tables:
                return None
            rows = _rows(db, f"select * from {SCHEMA}.{table} where document = ?", [document])
            return rows[0] if rows else None

        source, quarantined, signals = one("source_documents"), one("quarantined_documents"), one("signals")
        history = DocumentHistory(document=document, batch=batch, status="not ingested yet")
        if source:
            history = history.model_copy(
                update={"doc_id": source["doc_id"], "status": "ingested", "title": source["title"]}
            )
        elif quarantined:
            history = history.model_copy(
                update={
                    "doc_id": (quarantined["content_sha256"] or "")[:16],
                    "status": f"quarantined: {quarantined['kind']}",
                    "quarantine_reason": quarantined["reason"],
                }
            )
        if "chunks" in tables:
            [(count,)] = db.execute(f"select count(*) from {SCHEMA}.chunks where document = ?", [document]).fetchall()
            history.chunks = count
        if signals:
            history.signals = {
                name: _decoded(signals.get(name))
                for name in ("status", "error", "sentiment", "entities", "events", "key_figures")
                if name in signals
            }
        if history.doc_id and "fact_checks" in tables and source:
            history.verdicts = _verdicts(db, history.doc_id)
    history.materializations = _batch_history(instance, document, batch)
    if history.status == "not ingested yet" and not history.materializations:
        raise DocumentNotFound(
            f"no document {wanted!r} in the warehouse {warehouse} or in the materializations of batch {batch}"
        )
    return history


def _decoded(value: object) -> object:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _verdicts(db: duckdb.DuckDBPyConnection, doc_id: str) -> list[Verdict]:
    pattern = f'%"{doc_id}-%'
    rows = _rows(
        db,
        f"select claim_id, topic, claim, verdict, evidence_chunk_ids like ? as evidence, "
        f"conflicting_chunk_ids like ? as conflict from {SCHEMA}.fact_checks "
        f"where evidence_chunk_ids like ? or conflicting_chunk_ids like ? order by claim_id",
        [pattern] * 4,
    )
    return [
        Verdict(
            claim_id=r["claim_id"],
            topic=r["topic"],
            claim=r["claim"],
            verdict=r["verdict"],
            role="evidence" if r["evidence"] else "conflict",
        )
        for r in rows
    ]
