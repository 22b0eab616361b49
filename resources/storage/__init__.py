"""State the pipeline keeps beside Dagster's own: the state store (SQLite on one machine,
Postgres in production), the approvals log, and files handed to people, written atomically."""
