"""The sandbox's state: one SQLite file of its own, shared safely by several processes."""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from integrations.epilot_sandbox.query import iso_ms, now_ms
from integrations.epilot_sandbox.webhook_outbox import queue_entity_webhooks

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS entities (
    id TEXT PRIMARY KEY,
    schema TEXT NOT NULL,
    title TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entities_schema_updated ON entities (schema, updated_at, id);
CREATE INDEX IF NOT EXISTS entities_updated ON entities (updated_at);
CREATE TABLE IF NOT EXISTS relations (
    from_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    to_id TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (from_id, attribute, to_id)
);
CREATE INDEX IF NOT EXISTS relations_to ON relations (to_id);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS document_links (
    kind TEXT NOT NULL,
    document_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    schema TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS document_links_entity ON document_links (kind, entity_id);
CREATE TABLE IF NOT EXISTS schemas (slug TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    event_id TEXT PRIMARY KEY,
    config_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    status_code INTEGER,
    message TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_config ON webhook_deliveries (config_id, created_at);
"""

SYSTEM_READ_ONLY = frozenset(
    {"_id", "_org", "_owners", "_created_at", "_updated_at", "_deleted_at", "_acl", "_changesets", "_schema"}
)


def later_than(previous: str | None) -> str:
    """Now, or one millisecond after `previous` if the clock has not moved past it."""
    current = now_ms()
    if previous and current <= previous:
        moment = dt.datetime.fromisoformat(previous) + dt.timedelta(milliseconds=1)
        current = iso_ms(moment.isoformat())
    return current


def relation_refs(body: Mapping[str, Any]) -> Iterator[tuple[str, str, list[str]]]:
    """(attribute, entity_id, tags) for every `$relation` item in a document."""
    for attribute, value in body.items():
        if attribute.startswith("_"):
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Mapping) and isinstance(item.get("$relation"), list):
                for ref in item["$relation"]:
                    if isinstance(ref, Mapping) and isinstance(ref.get("entity_id"), str):
                        tags = ref.get("_tags") if isinstance(ref.get("_tags"), list) else []
                        yield attribute, ref["entity_id"], tags


INSERT_ENTITY = ("INSERT OR REPLACE INTO entities (id, schema, title, created_at, updated_at, deleted_at, body) "
                 "VALUES (?,?,?,?,?,?,?)")


class SandboxStore:
    """Entities, relations and workflow/automation documents in SQLite (WAL, per-thread connections)."""

    def __init__(self, path: str | Path, *, org_id: str = "739224") -> None:
        self.path = str(path)
        self.org_id = org_id
        self._local = threading.local()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self.write() as conn:
            for statement in SCHEMA_SQL.split(";"):
                if statement.strip():
                    conn.execute(statement)

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the file's write lock from the start."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def reset(self) -> None:
        with self.write() as conn:
            for table in ("entities", "relations", "documents", "document_links", "schemas", "webhook_deliveries"):
                conn.execute(f"DELETE FROM {table}")

    # ------------------------------------------------------------------ entities

    def get_entity(self, entity_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT body FROM entities WHERE id = ?", (entity_id,)).fetchone()
        return json.loads(row["body"]) if row else None

    def put_entity(self, conn: sqlite3.Connection, body: dict[str, Any]) -> None:
        """Insert or replace a full entity document and its relation index (inside `write()`).

        Automation flows that send the entity's changes to a webhook get a delivery queued in the same transaction.
        """
        before = conn.execute("SELECT deleted_at FROM entities WHERE id = ?", (body["_id"],)).fetchone()
        if before is None:
            operation = "createEntity"
        elif body.get("_deleted_at") and not before["deleted_at"]:
            operation = "softDeleteEntity"
        elif before["deleted_at"] and not body.get("_deleted_at"):
            operation = "restoreEntity"
        else:
            operation = "updateEntity"
        queue_entity_webhooks(conn, self.org_id, operation, body)
        conn.execute(
            INSERT_ENTITY,
            (body["_id"], body["_schema"], _index_text(body.get("_title")), body["_created_at"], body["_updated_at"],
             body.get("_deleted_at"), json.dumps(body, separators=(",", ":"), ensure_ascii=False)),
        )
        conn.execute("DELETE FROM relations WHERE from_id = ?", (body["_id"],))
        conn.executemany("INSERT OR REPLACE INTO relations (from_id, attribute, to_id, tags) VALUES (?,?,?,?)",
                         [(body["_id"], attribute, to_id, json.dumps(tags)) for attribute, to_id, tags in relation_refs(body)])

    def bulk_insert_entities(self, bodies: Iterable[dict[str, Any]]) -> int:
        """Fast path for seeding: one transaction, executemany."""
        rows, relations = [], []
        for body in bodies:
            rows.append((body["_id"], body["_schema"], _index_text(body.get("_title")), body["_created_at"], body["_updated_at"],
                         body.get("_deleted_at"), json.dumps(body, separators=(",", ":"), ensure_ascii=False)))
            relations.extend((body["_id"], attribute, to_id, json.dumps(tags)) for attribute, to_id, tags in relation_refs(body))
        with self.write() as conn:
            conn.executemany(INSERT_ENTITY, rows)
            conn.executemany("INSERT OR REPLACE INTO relations (from_id, attribute, to_id, tags) VALUES (?,?,?,?)", relations)
        return len(rows)

    def purge_entity(self, conn: sqlite3.Connection, entity_id: str) -> None:
        row = conn.execute("SELECT body FROM entities WHERE id = ?", (entity_id,)).fetchone()
        if row is not None:
            queue_entity_webhooks(conn, self.org_id, "deleteEntity", json.loads(row["body"]))
        conn.execute("DELETE FROM entities WHERE id = ?", (entity_id,))
        conn.execute("DELETE FROM relations WHERE from_id = ?", (entity_id,))

    def relations_of(self, entity_id: str, *, include_reverse: bool) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT r.attribute, r.to_id AS other, r.tags, e.schema, 0 AS reverse FROM relations r "
            "LEFT JOIN entities e ON e.id = r.to_id WHERE r.from_id = ? ORDER BY r.attribute, r.to_id", (entity_id,),
        ).fetchall()
        if include_reverse:
            rows += self.conn.execute(
                "SELECT r.attribute, r.from_id AS other, r.tags, e.schema, 1 AS reverse FROM relations r "
                "JOIN entities e ON e.id = r.from_id WHERE r.to_id = ? AND e.deleted_at IS NULL ORDER BY r.attribute, r.from_id",
                (entity_id,),
            ).fetchall()
        items = []
        for row in rows:
            item: dict[str, Any] = {"entity_id": row["other"], "attribute": row["attribute"], "_tags": json.loads(row["tags"])}
            if row["schema"]:
                item["_schema"] = row["schema"]
            if row["reverse"]:
                item["reverse"] = True
            items.append(item)
        return items

    def search(self, where: str, params: list[Any], *, order_by: str, after: str | None, after_params: list[Any],
               limit: int, offset: int, count: bool = True) -> tuple[int, list[sqlite3.Row]]:
        """(hits of the query, or 0 without `count`; one page of rows) for a SQL condition built by the query module."""
        conn = self.conn
        total = conn.execute(f"SELECT COUNT(*) FROM entities WHERE {where}", params).fetchone()[0] if count else 0
        condition = f"({where}) AND {after}" if after else where
        rows = conn.execute(
            f"SELECT id, schema, title, created_at, updated_at, deleted_at, body FROM entities WHERE {condition} "
            f"ORDER BY {order_by} LIMIT ? OFFSET ?",
            [*params, *after_params, limit, offset],
        ).fetchall()
        return total, rows

    # ------------------------------------------------------------------ documents (workflows, automations)

    def put_document(self, conn: sqlite3.Connection, kind: str, doc_id: str, body: Mapping[str, Any],
                     links: Iterable[tuple[str, str]] = ()) -> None:
        seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM documents WHERE kind = ?", (kind,)).fetchone()[0]
        existing = conn.execute("SELECT seq FROM documents WHERE kind = ? AND id = ?", (kind, doc_id)).fetchone()
        conn.execute(
            "INSERT OR REPLACE INTO documents (kind, id, name, seq, body) VALUES (?,?,?,?,?)",
            (kind, doc_id, body.get("name") or body.get("flow_name"), existing["seq"] if existing else seq,
             json.dumps(body, separators=(",", ":"), ensure_ascii=False)),
        )
        links = list(links)
        if links:
            conn.execute("DELETE FROM document_links WHERE kind = ? AND document_id = ?", (kind, doc_id))
            conn.executemany("INSERT INTO document_links (kind, document_id, entity_id, schema) VALUES (?,?,?,?)",
                             [(kind, doc_id, entity_id, schema) for entity_id, schema in links])

    def get_document(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT body FROM documents WHERE kind = ? AND id = ?", (kind, doc_id)).fetchone()
        return json.loads(row["body"]) if row else None

    def list_documents(self, kind: str, *, entity_id: str | None = None, schema: str | None = None) -> list[dict[str, Any]]:
        if entity_id or schema:
            conditions, params = ["d.kind = ?"], [kind]
            if entity_id:
                conditions.append("l.entity_id = ?")
                params.append(entity_id)
            if schema:
                conditions.append("l.schema = ?")
                params.append(schema)
            rows = self.conn.execute(
                "SELECT DISTINCT d.body, d.seq FROM documents d "
                "JOIN document_links l ON l.kind = d.kind AND l.document_id = d.id "
                f"WHERE {' AND '.join(conditions)} ORDER BY d.seq",
                params,
            ).fetchall()
        else:
            rows = self.conn.execute("SELECT body FROM documents WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
        return [json.loads(row["body"]) for row in rows]

    def delete_document(self, conn: sqlite3.Connection, kind: str, doc_id: str) -> None:
        conn.execute("DELETE FROM documents WHERE kind = ? AND id = ?", (kind, doc_id))
        conn.execute("DELETE FROM document_links WHERE kind = ? AND document_id = ?", (kind, doc_id))

    # ------------------------------------------------------------------ schemas

    def put_schema(self, conn: sqlite3.Connection, body: Mapping[str, Any]) -> None:
        conn.execute("INSERT OR REPLACE INTO schemas (slug, body) VALUES (?, ?)", (body["slug"], json.dumps(body)))

    def list_schemas(self) -> list[dict[str, Any]]:
        return [json.loads(row["body"]) for row in self.conn.execute("SELECT body FROM schemas ORDER BY slug")]

    def count_entities(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM entities").fetchone()[0]


def _index_text(value: Any) -> str | None:
    """The title column indexes text; a document may hold anything there (the body keeps it as it is)."""
    return value if value is None or isinstance(value, str) else json.dumps(value)
