"""Each pipeline folder declares its groups once; jobs select by them, and an asset in a group
no pipeline declares fails definition loading instead of silently joining another job."""

import types

import pytest
from dagster import asset

from assets import PIPELINES
from assets.components.pipeline import Pipeline
from assets.digest import DIGEST
from assets.triage import TRIAGE

pytestmark = pytest.mark.unit


def test_the_pipelines_own_disjoint_groups_and_every_asset_sits_in_one():
    assert not set(DIGEST.groups) & set(TRIAGE.groups)
    for pipeline in PIPELINES:
        pipeline.check_groups(pipeline.assets)
        assert {g for a in pipeline.assets for g in a.group_names_by_key.values()} <= set(pipeline.groups)


def test_an_asset_in_an_undeclared_group_is_refused_with_where_to_declare_it():
    @asset(group_name="newsletters")
    def weekly_newsletter() -> None: ...

    stage = types.ModuleType("newsletter_stage")
    stage.weekly_newsletter = weekly_newsletter
    pipeline = Pipeline(name="digest", groups=DIGEST.groups, stages=(stage,))
    with pytest.raises(ValueError, match=r"weekly_newsletter is in group 'newsletters'.*assets/digest/__init__.py"):
        pipeline.check_groups(pipeline.assets)


def test_a_named_asset_that_is_not_the_pipelines_is_refused():
    pipeline = Pipeline(name="digest", groups=DIGEST.groups, stages=(), awaits_a_person=("published_digset",))
    with pytest.raises(ValueError, match="'published_digset', which is none of its assets"):
        pipeline.check_groups([])


def test_no_unattended_job_includes_what_waits_for_a_person():
    from sensors.jobs import digest_job, digest_refresh_job, document_job

    for job in (digest_job, digest_refresh_job, document_job):
        keys = {k.to_user_string() for k in job.selection.resolve(DIGEST.assets)}
        assert "published_digest" not in keys and keys
