"""Resources: the outside systems the assets use (models, embeddings, vector store).

Nothing here knows about assets; the code location configures these from settings.
"""

from resources.embeddings import EmbeddingsResource
from resources.ledger import CallLedger, CallRecord, LedgerSummary
from resources.model import BudgetExceededError, Endpoint, ModelCallError, ModelResource, StructuredOutputError
from resources.traces import TraceStore
from resources.vector_store import Hit, VectorStoreResource
from resources.warehouse import WarehouseIOManager

__all__ = [
    "BudgetExceededError",
    "CallLedger",
    "CallRecord",
    "EmbeddingsResource",
    "Endpoint",
    "Hit",
    "LedgerSummary",
    "ModelCallError",
    "ModelResource",
    "StructuredOutputError",
    "TraceStore",
    "VectorStoreResource",
    "WarehouseIOManager",
]
