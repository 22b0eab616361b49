"""Declarative automation: which assets follow their inputs without a schedule.

Only the cheap, deterministic followers are automated. The index follows the
documents (it embeds only new chunks), and the fact checks follow the index's
*data version*, which changes only when its set of chunks does: re-materializing an
unchanged index re-checks nothing. Drafts and summaries wait for the digest schedule
or a person, because they spend model budget and feed what gets published.
"""

from dagster import AssetSelection, AutomationCondition

_SETTLED = (
    ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
    & AutomationCondition.all_deps_blocking_checks_passed()
)


def when_documents_change() -> AutomationCondition:
    """Any document partition upstream was re-materialized, and no document run is still going."""
    return (AutomationCondition.any_deps_updated().since_last_handled() & _SETTLED).with_label("documents changed")


def when_index_changes(index: str) -> AutomationCondition:
    """The index upstream has a new data version, and every other input exists."""
    changed = AutomationCondition.any_deps_match(AutomationCondition.data_version_changed()).allow(
        AssetSelection.assets(index)
    )
    return (changed.since_last_handled() & ~AutomationCondition.any_deps_missing() & _SETTLED).with_label(
        "index changed"
    )
