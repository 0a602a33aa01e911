"""Derive Ausbau projects from mirrored opportunities, orders and workflow executions.

Phase rules, first match wins:
1. cancelled    the opportunity is deleted in epilot or its status is `abgebrochen`;
2. completed    an order is `completed`, or a workflow on the opportunity or its orders is DONE
                and none still runs;
3. construction a workflow runs on one of its orders, or a workflow on the opportunity has moved
                past its first section;
4. approved     the opportunity is `geschlossen` (approved) or has an order that is not cancelled;
5. planning     everything else (`ausstehend`, `bearbeitung` without orders).
Progress is the completed share of steps of the most recently started execution; the budget is
the sum of the orders' totals, else the opportunity's own budget.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from projects.models import AusbauProject, Opportunity, Order, WorkflowExecution
from projects.services.bulk import among, values_read_at_once

CANCELLED_STATUSES = ["abgebrochen"]
APPROVED_STATUSES = ["geschlossen"]
CHUNK = 2000
Phase = AusbauProject.Phase


def projects_refresh(*, opportunity_ids: Iterable[int] | None = None, between_chunks: Callable[[], None] | None = None) -> int:
    """Recompute the projects of the given opportunities (all when None); returns how many were written.

    Each chunk is derived and written by the database in one statement (`INSERT ... SELECT`), so
    nothing is read into Python; `between_chunks` is called after each chunk's transaction.
    """
    ids = (sorted(set(opportunity_ids)) if opportunity_ids is not None
           else sorted(values_read_at_once(Opportunity.objects.order_by(), "id", flat=True)))
    written = 0
    for start in range(0, len(ids), CHUNK):
        written += _refresh_chunk(ids[start:start + CHUNK])
        if between_chunks:
            between_chunks()
    return written


def _refresh_chunk(ids: list[int]) -> int:
    """Derive and upsert the projects of these opportunities (those out of scope lose theirs); returns how many."""
    quote = connection.ops.quote_name
    dialect = _DIALECTS[connection.vendor]
    chunk, chunk_params = among("p.id", ids)
    orders_chunk, orders_params = among("opportunity_id", ids)
    on_opportunity, on_opportunity_params = among("e.opportunity_id", ids)
    on_order, on_order_params = among("o.opportunity_id", ids)
    wanted = sorted(set(settings.AUSBAU_PROJECT_TAGS))
    tagged = (f"EXISTS (SELECT 1 FROM {dialect['tag_values'].format(column='p.tags')} "
              f"WHERE t.value IN ({', '.join(['%s'] * len(wanted))}))") if wanted else ""
    sql = _DERIVE.format(
        project=quote(AusbauProject._meta.db_table), opportunity=quote(Opportunity._meta.db_table),
        order=quote(Order._meta.db_table), execution=quote(WorkflowExecution._meta.db_table),
        orders_chunk=orders_chunk, on_opportunity=on_opportunity, on_order=on_order, chunk=chunk,
        in_scope=tagged or "1 = 1",
        cancelled=", ".join(["%s"] * len(CANCELLED_STATUSES)), approved=", ".join(["%s"] * len(APPROVED_STATUSES)),
        first_section=dialect["first_section"], latest_update=dialect["latest_update"], euros=dialect["euros"],
        tags=dialect["tags_text"].format(column="d.tags"))
    params = [*orders_params, *on_opportunity_params, *on_order_params,
              *CANCELLED_STATUSES, Phase.CANCELLED, Phase.COMPLETED, Phase.CONSTRUCTION, *APPROVED_STATUSES, Phase.APPROVED,
              Phase.PLANNING, *chunk_params, *wanted, Phase.COMPLETED, connection.ops.adapt_datetimefield_value(timezone.now())]
    with transaction.atomic(), connection.cursor() as cursor:
        if wanted:
            cursor.execute(f"DELETE FROM {quote(AusbauProject._meta.db_table)} WHERE opportunity_id IN "
                           f"(SELECT p.id FROM {quote(Opportunity._meta.db_table)} p WHERE {chunk} AND NOT {tagged})",
                           [*chunk_params, *wanted])
        cursor.execute(sql, params)
        return cursor.rowcount


# Where SQLite and PostgreSQL differ: JSON paths and arrays, the latest of several possibly missing
# moments (SQLite's MAX() of several values is NULL if one is; its datetimes are ISO texts), and cents
# to euros (a REAL in SQLite's decimal column, as Django stores a Decimal there).
_PG_TAGS = "jsonb_array_elements_text(CASE WHEN jsonb_typeof({column}) = 'array' THEN {column} ELSE '[]'::jsonb END)"
_DIALECTS = {
    "sqlite": {
        "first_section": "COALESCE(NULLIF(json_extract(e.flow, '$.flow[0].name'), ''), "
                         "json_extract(e.flow, '$.phases[0].name'))",
        "tag_values": "json_each({column}) AS t",
        # group_concat() takes json_each()'s rows in the array's order
        "tags_text": "(SELECT ',' || group_concat(replace(value, ',', ' '), ',') || ',' FROM json_each({column}))",
        "latest_update": "NULLIF(MAX(COALESCE(p.epilot_updated_at, ''), COALESCE(o.updated, ''), COALESCE(x.updated, '')), '')",
        "euros": "d.total / 100.0",
    },
    "postgresql": {
        "first_section": "COALESCE(NULLIF(e.flow -> 'flow' -> 0 ->> 'name', ''), e.flow -> 'phases' -> 0 ->> 'name')",
        "tag_values": f"{_PG_TAGS} AS t(value)",
        "tags_text": f"(SELECT ',' || string_agg(replace(t.value, ',', ' '), ',' ORDER BY t.n) || ',' "
                     f"FROM {_PG_TAGS} WITH ORDINALITY AS t(value, n))",
        "latest_update": "GREATEST(p.epilot_updated_at, o.updated, x.updated)",
        "euros": "d.total::numeric / 100",
    },
}

# The rules of the module docstring in one statement per chunk: an opportunity's orders and the
# executions on it or on its orders (each found through an index, so a few changed projects cost a
# few lookups) are aggregated, and its latest execution (a running one first, then the most
# recently started) gives progress and the current step. Progress rounds half to even, as Python's
# round() does. Text placeholders ({...}) are filled in first, parameters (%s) when it runs.
# INSERT comes first: sqlite3 counts the rows of a statement only when it begins with INSERT; the
# final `WHERE 1 = 1` keeps SQLite from reading ON CONFLICT as part of the SELECT's join.
_DERIVE = """
INSERT INTO {project} (opportunity_id, title, phase, progress_percent, current_section, current_step, budget,
                       has_running_workflow, tags, updated_at)
WITH orders AS (
    SELECT opportunity_id AS owner,
           MAX(CASE WHEN live = 1 AND status = 'completed' THEN 1 ELSE 0 END) AS any_completed,
           SUM(live) AS live_count,
           SUM(CASE WHEN live = 1 THEN amount_total END) AS total,
           COUNT(CASE WHEN live = 1 THEN amount_total END) AS totals,
           MAX(epilot_updated_at) AS updated
    FROM (SELECT opportunity_id, status, amount_total, epilot_updated_at,
                 CASE WHEN epilot_deleted_at IS NULL AND status <> 'cancelled' THEN 1 ELSE 0 END AS live
          FROM {order} WHERE {orders_chunk}) AS chunk_orders
    GROUP BY opportunity_id
), executions AS (
    SELECT e.id, e.status, e.current_section, e.current_step, e.completed_steps, e.total_steps, e.started_at,
           e.epilot_updated_at, e.order_id, e.opportunity_id AS owner, {first_section} AS first_section
    FROM {execution} e WHERE {on_opportunity}
    UNION ALL
    SELECT e.id, e.status, e.current_section, e.current_step, e.completed_steps, e.total_steps, e.started_at,
           e.epilot_updated_at, e.order_id, o.opportunity_id AS owner, {first_section} AS first_section
    FROM {execution} e JOIN {order} o ON o.id = e.order_id WHERE e.opportunity_id IS NULL AND {on_order}
), facts AS (
    SELECT owner,
           MAX(CASE WHEN status = 'DONE' THEN 1 ELSE 0 END) AS any_done,
           SUM(CASE WHEN status = 'STARTED' THEN 1 ELSE 0 END) AS running,
           MAX(CASE WHEN status = 'STARTED' AND order_id IS NOT NULL THEN 1 ELSE 0 END) AS running_on_order,
           MAX(CASE WHEN status = 'STARTED' AND current_section <> ''
                     AND (first_section IS NULL OR current_section <> first_section) THEN 1 ELSE 0 END) AS moved_on,
           MAX(epilot_updated_at) AS updated
    FROM executions GROUP BY owner
), latest AS (
    SELECT * FROM (
        SELECT owner, status, current_section, current_step, completed_steps, total_steps,
               ROW_NUMBER() OVER (PARTITION BY owner ORDER BY CASE WHEN status = 'STARTED' THEN 1 ELSE 0 END DESC,
                                  started_at DESC NULLS LAST, id) AS position
        FROM executions
    ) AS ranked WHERE position = 1
), derived AS (
    SELECT p.id, p.title, p.budget, p.tags, o.total, o.totals, l.status AS latest_status, l.current_section,
           l.current_step, l.completed_steps, l.total_steps, COALESCE(x.running, 0) AS running,
           {latest_update} AS updated,
           CASE WHEN p.epilot_deleted_at IS NOT NULL OR p.status IN ({cancelled}) THEN %s
                WHEN COALESCE(o.any_completed, 0) = 1 OR (COALESCE(x.any_done, 0) = 1 AND COALESCE(x.running, 0) = 0)
                     THEN %s
                WHEN COALESCE(x.running_on_order, 0) = 1 OR COALESCE(x.moved_on, 0) = 1 THEN %s
                WHEN p.status IN ({approved}) OR COALESCE(o.live_count, 0) > 0 THEN %s
                ELSE %s END AS phase
    FROM {opportunity} p LEFT JOIN orders o ON o.owner = p.id LEFT JOIN facts x ON x.owner = p.id
         LEFT JOIN latest l ON l.owner = p.id
    WHERE {chunk} AND {in_scope}
)
SELECT d.id, SUBSTR(d.title, 1, 500), d.phase,
       CASE WHEN d.phase = %s THEN 100
            WHEN d.total_steps > 0 THEN 100 * d.completed_steps / d.total_steps
                 + CASE WHEN 2 * (100 * d.completed_steps %% d.total_steps) > d.total_steps THEN 1
                        WHEN 2 * (100 * d.completed_steps %% d.total_steps) = d.total_steps
                             THEN (100 * d.completed_steps / d.total_steps) %% 2
                        ELSE 0 END
            ELSE 0 END,
       CASE WHEN d.latest_status = 'STARTED' THEN d.current_section ELSE '' END,
       CASE WHEN d.latest_status = 'STARTED' THEN d.current_step ELSE '' END,
       CASE WHEN d.totals > 0 THEN {euros} ELSE d.budget END,
       d.running > 0, SUBSTR(COALESCE({tags}, ''), 1, 1000), COALESCE(d.updated, %s)
FROM derived d WHERE 1 = 1
ON CONFLICT (opportunity_id) DO UPDATE SET title = EXCLUDED.title, phase = EXCLUDED.phase,
    progress_percent = EXCLUDED.progress_percent, current_section = EXCLUDED.current_section,
    current_step = EXCLUDED.current_step, budget = EXCLUDED.budget, has_running_workflow = EXCLUDED.has_running_workflow,
    tags = EXCLUDED.tags, updated_at = EXCLUDED.updated_at
"""
