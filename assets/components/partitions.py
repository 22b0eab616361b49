"""The partitions a pipeline's assets may share, declared once so that a YAML step names
them (`partitions: documents`) and a sensor adds keys to the same definition the assets use."""

from collections.abc import Sequence

from dagster import DynamicPartitionsDefinition, PartitionsDefinition, StaticPartitionsDefinition
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from resources.documents.batches import BATCH_KEYS


class NamedStaticPartitions(StaticPartitionsDefinition):
    """A static partition set with a name, so that YAML steps and the warehouse refer to it
    as they refer to a dynamic one."""

    def __init__(self, name: str, keys: tuple[str, ...]):
        super().__init__(list(keys))
        self._partition_set_name = name

    @property
    def name(self) -> str:
        return self._partition_set_name


# The per-document assets' partitions: a fixed set of batches, a document's batch being a
# hash of its key (resources/documents/batches.py says why batches and not documents).
DOCUMENT_BATCHES = NamedStaticPartitions("document_batches", BATCH_KEYS)
# The registry of documents: every file in a watched folder, in the order it arrived (its
# key: `<folder label>/<relative path>`). No asset is partitioned by it; it orders the
# corpus (the earlier of two identical files keeps the text) and lists it in the UI.
DOCUMENTS = DynamicPartitionsDefinition(name="documents")
# One partition per support ticket (its key: `<folder label>/<file name>`).
TICKETS = DynamicPartitionsDefinition(name="tickets")

# Every table partitioned one way holds the partition key in the same column, so that the
# warehouse reads and replaces a partition's rows by it (`partition_expr`).
PARTITION_COLUMNS: dict[str, str] = {"document_batches": "batch", "tickets": "ticket"}
# The column naming each item of such a table: a batch holds many documents, a ticket partition one ticket.
ITEM_COLUMNS: dict[str, str] = {"document_batches": "document", "tickets": "ticket"}


def partition_column(partitions: PartitionsDefinition | None) -> str:
    """The column holding the partition key of a table partitioned by `partitions` ("" when unpartitioned)."""
    if partitions is None:
        return ""
    name = getattr(partitions, "name", None) or ""
    if name not in PARTITION_COLUMNS:
        raise ValueError(f"no partition column is declared for {partitions!r} (known: {', '.join(PARTITION_COLUMNS)})")
    return PARTITION_COLUMNS[name]


# The run tags that make one run cover a range of partitions.
#
# A single-run backfill of many batches or tickets is one run tagged with the first and
# last partition key of the range. Dagster's UI and daemon set these tags when they launch
# such a backfill; `execute_in_process` and `RunRequest` take one partition key only and have
# no public way to ask for a range, so the tags are set here, and only here.
def range_tags(keys: Sequence[str]) -> dict[str, str]:
    """Tags for one run over `keys`, first to last in the partitions' order."""
    if not keys:
        raise ValueError("a partition range needs at least one key")
    return {ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]}
