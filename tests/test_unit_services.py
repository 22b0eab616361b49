"""What a services test does when its server is missing: skipped with how to start it on a
developer's machine, failed with the same words in CI, where a missing server is a broken
machine rather than a choice. Checked against a port nothing listens on and one a socket of
the test's own holds open."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.conftest import (
    POSTGRES_URL_VARIABLE,
    START_POSTGRES,
    START_RABBITMQ,
    free_port,
    in_ci,
    postgres_service,
    rabbitmq_service,
    require_service,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (taken free, then released)."""
    return free_port()


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def set_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    """CI set to `ci`, or unset (None)."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        (None, pytest.skip.Exception),
        ("true", pytest.fail.Exception),
        ("True", pytest.fail.Exception),
        ("1", pytest.fail.Exception),
    ],
)
@pytest.mark.parametrize(
    ("name", "how_to_start"),
    [("PostgreSQL", "start it (`service postgresql start`)"), ("RabbitMQ", "start it (`rabbitmq-server -detached`)")],
)
def test_a_missing_server_skips_the_test_outside_ci_and_fails_it_in_ci_with_the_same_message(
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    ci: str | None,
    outcome: type[BaseException],
    name: str,
    how_to_start: str,
) -> None:
    set_ci(monkeypatch, ci)
    assert in_ci() is (ci is not None)
    with pytest.raises(outcome) as stopped:
        require_service(name, "127.0.0.1", closed_port, how_to_start)
    assert str(stopped.value) == f"{name} is not reachable on 127.0.0.1:{closed_port}: {how_to_start}"


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_ci_set_to_false_or_empty_is_not_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not in_ci()


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_server_that_answers_lets_the_test_run_in_and_out_of_ci(
    listening_port: int, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    set_ci(monkeypatch, ci)
    assert require_service("Redis", "127.0.0.1", listening_port, "start it") is None


def test_postgres_is_found_where_the_variable_points_and_the_message_says_how_to_start_it(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(POSTGRES_URL_VARIABLE, raising=False)
    admin, default = postgres_service()
    assert admin == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert (default.host, default.port) == ("127.0.0.1", 5432)
    assert START_POSTGRES in default.how_to_start and POSTGRES_URL_VARIABLE in default.how_to_start

    monkeypatch.setenv(POSTGRES_URL_VARIABLE, f"postgresql://tester@127.0.0.1:{closed_port}/admin")
    monkeypatch.delenv("CI", raising=False)
    admin, service = postgres_service()
    assert admin.endswith(f":{closed_port}/admin") and service.port == closed_port
    with pytest.raises(pytest.skip.Exception) as skipped:
        service.require()
    assert str(skipped.value).startswith(
        f"PostgreSQL is not reachable on 127.0.0.1:{closed_port}: start it (`{START_POSTGRES}`)"
    )


def test_rabbitmq_is_read_from_the_celery_broker_url() -> None:
    service = rabbitmq_service("pyamqp://guest:guest@127.0.0.1:5673//")
    assert (service.name, service.host, service.port) == ("RabbitMQ", "127.0.0.1", 5673)
    assert START_RABBITMQ in service.how_to_start and "AI_PIPELINES_CELERY_BROKER" in service.how_to_start
    assert rabbitmq_service("pyamqp://guest:guest@broker.internal//").port == 5672  # the AMQP default
