"""PostgreSQL: the connection pool (search_path = our schema, then public for pgvector) and migrations."""
import logging
import threading
from importlib import resources

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool

from common.runtime import Readiness
from common.settings import Settings

log = logging.getLogger(__name__)

_MIGRATIONS_LOCK = 0x6F637273  # advisory lock key: one migrator at a time across services


def _connect_kwargs(settings: Settings) -> dict:
    return {"options": f"-c search_path={settings.database_schema},public"}


def apply_migrations(settings: Settings) -> list[str]:
    """Apply schemas/db/NNN_*.sql not yet applied, each in its own transaction. Idempotent; returns what ran."""
    scripts = sorted(
        (p for p in resources.files("schemas").joinpath("db").iterdir() if p.name.endswith(".sql")),
        key=lambda p: p.name,
    )
    schema = sql.Identifier(settings.database_schema)
    applied: list[str] = []
    with psycopg.connect(settings.database_url, autocommit=True, **_connect_kwargs(settings)) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATIONS_LOCK,))
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations"
                " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for script in scripts:
                if script.name in done:
                    continue
                with conn.transaction():
                    conn.execute(script.read_text())
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (script.name,))
                applied.append(script.name)
                log.info("migration applied", extra={"migration": script.name, "schema": settings.database_schema})
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATIONS_LOCK,))
    return applied


def build_pool(settings: Settings, *, name: str, min_size: int = 1, max_size: int = 4) -> ConnectionPool:
    """An open pool whose connections know the vector type. Call apply_migrations first."""
    pool = ConnectionPool(
        settings.database_url,
        kwargs=_connect_kwargs(settings),
        configure=register_vector,
        check=ConnectionPool.check_connection,  # drop connections a Postgres restart broke before use
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
    )
    pool.open(wait=False)
    return pool


def watch_database(readiness: Readiness, pool: ConnectionPool, stop: threading.Event, every_s: float = 2.0) -> None:
    """Keep readiness's "database" current: SELECT 1 on a pooled connection every `every_s`, from a thread of
    its own (the loop may be waiting out a pool timeout of its own meanwhile). The thread ends with `stop`."""

    def watch() -> None:
        while not stop.wait(every_s):
            try:
                with pool.connection(timeout=every_s) as conn:
                    conn.execute("SELECT 1")
                readiness.available("database")
            except psycopg.OperationalError as exc:  # PoolTimeout is one
                readiness.wait_for("database", error=str(exc))

    threading.Thread(target=watch, name="database-watch", daemon=True).start()
