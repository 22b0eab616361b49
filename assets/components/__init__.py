"""How an asset is declared: the spec every asset's decorator keywords come from
(asset_spec.py), the LLM asset built from a declared model call (llm_asset.py) and the LLM
step component that YAML steps instantiate with it (llm_step.py), the pipeline declaration,
the shared partitions, automation conditions and check results. Nothing here declares an
asset of its own."""
