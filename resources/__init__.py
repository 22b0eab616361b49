"""Resources: the outside systems the assets use (models, embeddings, vector store).

Nothing here knows about assets; the code location configures these from settings.
"""

from resources.embeddings import EmbeddingsError, EmbeddingsResource
from resources.gateway.config import Endpoint, SpendCap, Tier
from resources.gateway.errors import BudgetExceededError, EndpointFailure, ModelCallError, StructuredOutputError
from resources.gateway.ledger import CallLedger, CallRecord, LedgerSummary, is_outage
from resources.gateway.model import ModelResource
from resources.gateway.request import Messages, ModelRequest
from resources.gateway.session import ModelSession
from resources.gateway.traces import EndpointFailures, TraceStore
from resources.secrets import redact, reveal
from resources.vector_store import Hit, VectorStoreResource
from resources.warehouse import WarehouseIOManager

__all__ = [
    "BudgetExceededError",
    "CallLedger",
    "CallRecord",
    "EmbeddingsError",
    "EmbeddingsResource",
    "Endpoint",
    "SpendCap",
    "EndpointFailure",
    "EndpointFailures",
    "Hit",
    "LedgerSummary",
    "Messages",
    "ModelCallError",
    "ModelRequest",
    "ModelResource",
    "ModelSession",
    "StructuredOutputError",
    "Tier",
    "TraceStore",
    "VectorStoreResource",
    "WarehouseIOManager",
    "is_outage",
    "redact",
    "reveal",
]
