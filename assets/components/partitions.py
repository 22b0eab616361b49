"""The partitions a pipeline's assets may share, declared once so that a YAML step names
them (`partitions: documents`) and a sensor adds keys to the same definition the assets use."""

from dagster import DynamicPartitionsDefinition

# One partition per source document (its key: `<folder label>/<relative path>`).
DOCUMENTS = DynamicPartitionsDefinition(name="documents")
# One partition per support ticket (its key: `<folder label>/<file name>`).
TICKETS = DynamicPartitionsDefinition(name="tickets")
