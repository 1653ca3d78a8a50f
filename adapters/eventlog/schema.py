"""The log's own schema, migrated at start, idempotently.

Migrations are numbered and append-only; each runs once, in its own transaction,
under an advisory lock so that several processes starting together do not race.
Every table lives in one PostgreSQL schema (``shiplog`` by default), selected with
``search_path`` on each connection, so a test can own a schema of its own.
"""

from __future__ import annotations

import asyncpg

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "event log, head, handled records, relay checkpoints",
        """
        CREATE TABLE log_head (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            position bigint NOT NULL,
            hash bytea NOT NULL
        );
        INSERT INTO log_head (position, hash) VALUES (0, decode(repeat('00', 32), 'hex'));

        CREATE TABLE events (
            position bigint PRIMARY KEY,
            stream_id text NOT NULL,
            stream_version bigint NOT NULL CHECK (stream_version > 0),
            event_id text NOT NULL UNIQUE,
            event_type text NOT NULL,
            topic text NOT NULL,
            partition_key text NOT NULL,
            correlation_id text,
            publish boolean NOT NULL,
            recorded_at timestamptz NOT NULL,
            -- the canonical JSON exactly as hashed; text, not json, so the bytes are
            -- the bytes (cast body::json to query into it)
            body text NOT NULL,
            hash bytea NOT NULL,
            UNIQUE (stream_id, stream_version)
        );
        CREATE INDEX events_recorded_at ON events USING brin (recorded_at);

        CREATE TABLE handled (
            consumer text NOT NULL,
            event_id text NOT NULL,
            handled_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        );

        CREATE TABLE relay_checkpoint (
            relay text PRIMARY KEY,
            position bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        2,
        "durable timers",
        """
        CREATE TABLE timers (
            timer_id text PRIMARY KEY,
            stream_id text NOT NULL,
            due_at timestamptz NOT NULL,
            purpose text NOT NULL,
            payload jsonb NOT NULL DEFAULT '{}',
            scheduled_at timestamptz NOT NULL DEFAULT now(),
            fired_at timestamptz,
            cancelled_at timestamptz
        );
        CREATE INDEX timers_pending ON timers (due_at) WHERE fired_at IS NULL AND cancelled_at IS NULL;
        """,
    ),
    (
        3,
        "deployment lanes: one active deployment per service and environment",
        """
        CREATE TABLE lanes (
            service text NOT NULL,
            environment text NOT NULL,
            active_deployment text,
            active_version text,
            serving_version text,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (service, environment)
        );
        CREATE TABLE lane_queue (
            service text NOT NULL,
            environment text NOT NULL,
            deployment_id text NOT NULL,
            version text NOT NULL,
            queued_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (service, environment, deployment_id)
        );
        """,
    ),
    (
        4,
        "API tokens, stored only as a SHA-256 hash",
        """
        CREATE TABLE tokens (
            token_id text PRIMARY KEY,
            token_hash bytea NOT NULL UNIQUE,
            principal text NOT NULL,
            roles text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz,
            revoked_at timestamptz
        );
        """,
    ),
]

_LOCK_KEY = 0x5348_4950  # "SHIP"


async def migrate(conn: asyncpg.Connection, schema: str) -> list[int]:
    """Create the schema and apply the migrations it lacks. Returns those applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
        for version, name, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(sql)
            await conn.execute(
                f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES ($1, $2)',
                version,
                name,
            )
            applied.append(version)
    return applied
