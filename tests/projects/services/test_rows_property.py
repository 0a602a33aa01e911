"""Property: whatever JSON an entity holds, the sync mirrors it whole or quarantines it with a reason; nothing else.

Entities go through the real path: the sandbox's search, the gateway's parsing, the row mapping and
the database (SQLite or PostgreSQL, whichever the suite runs on).
"""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from integrations.epilot import EpilotClient
from integrations.epilot_sandbox import SandboxApp
from projects.mirror.schemas import model_for
from projects.models import QuarantinedEntity, SyncRun
from projects.services.sync import sync_run

pytestmark = pytest.mark.django_db

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=120),
                         st.sampled_from(["", "x" * 101, "x" * 501, "a\x00b", "²", "ausstehend", "12.50", "1e400"]))
json_values = st.recursive(json_scalars, lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=12), children, max_size=3), max_leaves=8)
relation = st.one_of(json_values, st.fixed_dictionaries({"$relation": st.one_of(
    json_values, st.lists(st.fixed_dictionaries({"entity_id": st.one_of(st.uuids().map(str), json_values)}), max_size=2))}))
attributes = st.fixed_dictionaries(
    {},
    optional={
        "_title": st.one_of(st.text(max_size=600), json_values),
        "_tags": st.one_of(st.lists(st.text(max_size=20), max_size=3), json_values),
        "status": json_values,
        "email": json_values,
        "address": json_values,
        "budget": json_values,
        "amount_total": json_values,
        "currency": json_values,
        "customer": relation,
        "opportunity": relation,
        "items": relation,
        "workflows": json_values,
        "beschreibung": json_values,
    },
)


def json_numbers(value):
    """JSON has one number type: jsonb gives -1.4e+37 back as -14000000000000000000000000000000000000, the same JSON number."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, list):
        return [json_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: json_numbers(item) for key, item in value.items()}
    return value


@hypothesis_settings(max_examples=60, deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schema=st.sampled_from(["contact", "opportunity", "order"]), documents=st.lists(attributes, min_size=1, max_size=3))
def test_every_entity_is_mirrored_whole_or_quarantined(epilot: EpilotClient, sandbox: SandboxApp, schema: str,
                                                       documents: list[dict]) -> None:
    stamp = "2026-11-20T10:00:00.000Z"
    bodies = [
        {**document, "_id": str(uuid.uuid4()), "_schema": schema, "_org": "739224", "_created_at": stamp, "_updated_at": stamp}
        for document in documents
    ]
    sandbox.store.bulk_insert_entities(bodies)
    result = sync_run(trigger=SyncRun.Trigger.COMMAND, client=epilot, schemas=[schema], full=True)
    assert result.status == SyncRun.Status.SUCCEEDED, result.error
    for body in bodies:
        mirrored = model_for(schema).objects.filter(epilot_id=body["_id"]).first()
        quarantined = QuarantinedEntity.objects.filter(schema=schema, epilot_id=body["_id"]).first()
        assert (mirrored is None) != (quarantined is None), body
        if quarantined is not None:
            assert quarantined.reason
        else:
            stored = epilot.get_entity(schema, body["_id"]).data
            assert json_numbers(mirrored.payload) == json_numbers(dict(stored))  # whole, as epilot sent it
            assert mirrored.title == (stored.get("_title") or "")
