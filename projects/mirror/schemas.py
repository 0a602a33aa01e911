"""The schema registry: which epilot schemas are mirrored, into which model, and which names are allowed."""
from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings
from django.db import models

from projects.models import Contact, GenericEntity, Opportunity, Order

CORE_SCHEMAS = ("contact", "opportunity", "order")


class UnknownSchema(ValueError):
    """A schema name that is not one the mirror is configured for (or not a slug at all)."""


def model_for(schema: str) -> type[models.Model]:
    return {"contact": Contact, "opportunity": Opportunity, "order": Order}.get(schema, GenericEntity)


def mirrored_rows(schema: str) -> models.QuerySet:
    """The mirror's rows of `schema` (tombstones included): its own table, or its share of the generic one."""
    model = model_for(schema)
    return model.objects.all() if schema in CORE_SCHEMAS else model.objects.filter(schema=schema)


def configured_schemas() -> list[str]:
    return [*CORE_SCHEMAS, *(s for s in settings.SYNC_EXTRA_SCHEMAS if s not in CORE_SCHEMAS)]


SCHEMA_SLUG = re.compile(r"[a-z][a-z0-9_]{0,99}")


def validate_schemas(schemas: Iterable[str]) -> list[str]:
    """The given schema names, de-duplicated, if each is a configured schema slug.

    Schema names end up in search queries, so nothing else may pass. Raises UnknownSchema.
    """
    wanted = list(dict.fromkeys(schemas))
    allowed = set(configured_schemas())
    for schema in wanted:
        if not isinstance(schema, str) or not SCHEMA_SLUG.fullmatch(schema):
            raise UnknownSchema(f"Unknown schema {str(schema)[:100]!r}: not a schema slug")
        if schema not in allowed:
            raise UnknownSchema(f"Unknown schema {schema!r}: not mirrored (configured: {', '.join(sorted(allowed))}; "
                                "add more with SYNC_EXTRA_SCHEMAS)")
    return wanted
