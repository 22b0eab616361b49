"""The run tags that make one run cover a range of partitions.

A single-run backfill of many documents or tickets is one run tagged with the first and
last partition key of the range. Dagster's UI and daemon set these tags when they launch
such a backfill; `execute_in_process` and `RunRequest` take one partition key only and have
no public way to ask for a range, so the tags are set here, and only here.
"""

from collections.abc import Sequence

from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

__all__ = ["ASSET_PARTITION_RANGE_END_TAG", "ASSET_PARTITION_RANGE_START_TAG", "range_tags"]


def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """Tags for one run over `keys`, first to last in the partitions' order."""
    if not keys:
        raise ValueError("a partition range needs at least one key")
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
