"""The model gateway: the one way a model is called. An asset or check obtains a session
from the model resource (`model.session(context)`; outside a run, `model.open_session()`);
every request, one `ModelRequest`, passes through the response cache, the budget, the
endpoint chain with its circuit breakers, the bulkhead and retries, validation with a
bounded re-ask, and the run's record (tokens, cost, traces, telemetry)."""
