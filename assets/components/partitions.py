"""The partitions a pipeline's assets may share, declared once so that a YAML step names
them (`partitions: documents`) and a sensor adds keys to the same definition the assets use."""

from collections.abc import Sequence

from dagster import DynamicPartitionsDefinition, PartitionsDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from resources.documents.files import PARTITION_COLUMN as DOCUMENT_COLUMN

# One partition per source document (its key: `<folder label>/<relative path>`).
DOCUMENTS = DynamicPartitionsDefinition(name="documents")
# One partition per support ticket (its key: `<folder label>/<file name>`).
TICKETS = DynamicPartitionsDefinition(name="tickets")

# Every table partitioned one way holds the partition key in the same column, so that the
# warehouse reads and replaces a partition's rows by it (`partition_expr`).
PARTITION_COLUMNS: dict[str, str] = {"documents": DOCUMENT_COLUMN, "tickets": "ticket"}


def partition_column(partitions: PartitionsDefinition | None) -> str:
    """The column holding the partition key of a table partitioned by `partitions` ("" when unpartitioned)."""
    if partitions is None:
        return ""
    name = partitions.name if isinstance(partitions, DynamicPartitionsDefinition) else ""
    if name not in PARTITION_COLUMNS:
        raise ValueError(f"no partition column is declared for {partitions!r} (known: {', '.join(PARTITION_COLUMNS)})")
    return PARTITION_COLUMNS[name]


# The run tags that make one run cover a range of partitions.
#
# A single-run backfill of many documents or tickets is one run tagged with the first and
# last partition key of the range. Dagster's UI and daemon set these tags when they launch
# such a backfill; `execute_in_process` and `RunRequest` take one partition key only and have
# no public way to ask for a range, so the tags are set here, and only here.
def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """Tags for one run over `keys`, first to last in the partitions' order."""
    if not keys:
        raise ValueError("a partition range needs at least one key")
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
