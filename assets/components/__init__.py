"""How an asset is declared: the pipeline declaration, the shared partitions, the LLM step
component that YAML steps instantiate, automation conditions and check results. Nothing
here declares an asset of its own."""
