"""Per-partition verdicts that a check over a whole partitioned table records.

A check over the documents' signals decides once, over the whole table (a share against
a threshold), because the digest's runs cover every document at once. It still knows which
documents passed: recorded under `partition_results`, they let `ai-pipelines check
--report junit` show one test case per partition, so CI annotates the document that failed.
"""

from collections.abc import Iterable

from dagster import MetadataValue

PARTITION_RESULTS = "partition_results"


def partition_results(verdicts: Iterable[tuple[str, bool, str]]) -> dict[str, MetadataValue]:
    """`{partition_results: {partition: {"passed": bool, "reason": str}}}` from (partition, passed, reason)."""
    return {
        PARTITION_RESULTS: MetadataValue.json(
            {partition: {"passed": bool(passed), "reason": reason[:300]} for partition, passed, reason in verdicts}
        )
    }
