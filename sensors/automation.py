"""The sensor that evaluates the assets' automation conditions (see assets/components/automation.py)."""

from dagster import AssetSelection, AutomationConditionSensorDefinition

index_automation = AutomationConditionSensorDefinition(
    "index_automation",
    target=AssetSelection.assets("retrieval_index", "fact_checks"),
    minimum_interval_seconds=30,
    description="Refreshes the retrieval index when documents change and re-checks the facts when the index changes.",
)
