"""Checks that compare a share of rows with a limit: the one shape behind the corpus, ticket,
claim and model-request gates, so that every such check computes, names and reports its
share the same way."""

from collections.abc import Mapping

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from resources.metadata.markdown_tables import markdown_table


def share_within_limit(
    part: int,
    total: int,
    limit: float,
    *,
    blocking: bool,
    description: str,
    share_key: str,
    limit_key: str,
    empty_passes: bool,
    requires: bool = True,
    metadata: Mapping[str, object] | None = None,
) -> AssetCheckResult:
    """Passes when `part` is at most `limit` of `total` and what the check also `requires`
    holds. `description` may use `{share}`. An empty table passes only when `empty_passes`:
    no tickets is a quiet day, no documents is a broken intake."""
    share = part / total if total else (0.0 if empty_passes else 1.0)
    return AssetCheckResult(
        passed=requires and (total > 0 or empty_passes) and share <= limit,
        severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        description=description.format(share=share),
        metadata={share_key: round(share, 3), limit_key: limit, **(metadata or {})},
    )


def failed_requests_check_result(
    rows: pd.DataFrame, failed: pd.Series, shown: list[str], limit: float
) -> AssetCheckResult:
    """A warning, not a block: a stage that fell back (extractive drafts, failed signals)
    still produced something valid, but a person should know its model calls failed.
    `rows` holds one model request per row, `failed` marks those that got no answer."""
    failures = rows[failed] if len(rows) else rows
    return share_within_limit(
        len(failures),
        len(rows),
        limit,
        blocking=False,
        description=f"{len(failures)} of {len(rows)} model requests failed ({{share:.0%}}; limit {limit:.0%})",
        share_key="failed_share",
        limit_key="max_failed_request_share",
        empty_passes=True,
        metadata={
            "failed_requests": len(failures),
            "requests": len(rows),
            "failures": MetadataValue.md(markdown_table(failures[shown].head(10).to_dict(orient="records"))),
        },
    )
