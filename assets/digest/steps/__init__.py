"""The LLM steps declared in YAML, one folder each (`defs.yaml` and its prompt file).

This package is the project's `dg` defs module: Dagster's component loader reads every
`defs.yaml` under it, and `ai_pipelines.definitions` merges what they declare with the
Python-declared assets.
"""
