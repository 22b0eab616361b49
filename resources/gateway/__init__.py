"""The model gateway: the one way a model is called. An asset or check obtains a session
from the model resource; every request passes through cache, budget, the endpoint chain
with its circuit breakers, the bulkhead and retries, validation with a bounded re-ask, and
the run's record (tokens, cost, traces)."""
