"""The triage pipeline's LLM steps declared in YAML, one folder each (`defs.yaml` and its
prompt file), loaded with Dagster's component loader like the digest's."""
