"""How a request fails, in words a caller and a run report can act on.

An outage (no endpoint answered at all) is told apart from a bad answer (an endpoint
answered, but never validly), since the first is the provider's and the second the
prompt's or the model's; a spent budget is neither, and stops the step.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import BaseModel, Field

from resources.gateway.ledger import is_outage

INVALID_OUTPUT = "invalid output"


class EndpointFailure(BaseModel):
    """Why one endpoint of the chain gave no valid answer to one request."""

    endpoint: str
    model: str
    kind: str  # as `CallRecord.error_kind`: "503", "timeout", "circuit open", "invalid output", ...
    detail: str  # redacted
    attempts: int = 0  # requests sent to the endpoint (retries and re-asks included)
    window_tokens: int = 0  # the context window a "context window" refusal stated; 0 when it named none
    last_answer: str = Field(default="", repr=False)

    @property
    def outage(self) -> bool:
        return is_outage(self.kind)

    def __str__(self) -> str:
        return f"{self.endpoint} ({self.model}): {self.detail}"


class ModelCallError(RuntimeError):
    """No endpoint of the chain gave a valid answer; `failures` says why, per endpoint, and
    `outage` whether none answered at all (which a run report should name as an outage)."""

    def __init__(self, tier: str, failures: Sequence[EndpointFailure], subject: str = ""):
        self.tier = tier
        self.failures = list(failures)
        what = "outage" if self.outage else "invalid output" if self.invalid_output else "failed"
        reasons = "; ".join(str(f) for f in self.failures) or "no endpoint configured"
        super().__init__(f"{subject}all endpoints failed for tier {tier!r} ({what}): {reasons}")

    @property
    def outage(self) -> bool:
        """No endpoint answered: transport errors, 5xx, timeouts, exhausted 429s, open circuits."""
        return bool(self.failures) and all(f.outage for f in self.failures)

    @property
    def invalid_output(self) -> bool:
        """Some endpoint answered, but its answers stayed invalid after every re-ask."""
        return any(f.kind == INVALID_OUTPUT for f in self.failures)

    def __reduce__(self):
        return (type(self), (self.tier, self.failures))


class StructuredOutputError(ModelCallError):
    """No valid answer, and at least one endpoint answered but stayed invalid for the schema after every re-ask."""

    def __init__(self, tier: str, failures: Sequence[EndpointFailure], schema: str = ""):
        super().__init__(tier, failures, subject=f"{schema}: no valid answer; " if schema else "")
        self.schema = schema
        invalid = [f for f in self.failures if f.kind == INVALID_OUTPUT]
        self.attempts = sum(f.attempts for f in invalid)
        self.last_error = invalid[-1].detail if invalid else ""
        self.last_answer = invalid[-1].last_answer if invalid else ""

    def __reduce__(self):
        return (type(self), (self.tier, self.failures, self.schema))


class BudgetExceededError(RuntimeError):
    """The run has spent its model budget; further calls are refused and the step fails."""


class SpendCapExceededError(BudgetExceededError):
    """A call would break a spend cap shared by every run (or could never fit its endpoint's
    tokens per minute); it was refused before it was sent, and the step fails as when its
    run's budget is spent."""
