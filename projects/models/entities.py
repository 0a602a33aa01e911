"""Mirrored epilot entities: contacts, opportunities, orders and further schemas."""
from __future__ import annotations

from django.db import models


class PayloadField(models.JSONField):
    """A JSONField that keeps bulk inserts on PostgreSQL on plain VALUES.

    Django 5.2 bulk-inserts through UNNEST of per-column arrays on PostgreSQL; psycopg escapes
    large JSON documents inside a text array character by character, which made a sync page
    several times slower. Having `get_placeholder` opts the insert out of UNNEST.
    """

    def get_placeholder(self, value, compiler, connection):
        return "%s"


class MirroredEntity(models.Model):
    """Columns every mirrored epilot entity has; `payload` is the entity exactly as epilot sent it."""

    epilot_id = models.CharField(max_length=64, unique=True)
    title = models.CharField("Titel", max_length=500, blank=True)
    status = models.CharField("Status", max_length=100, blank=True, db_index=True)
    tags = models.JSONField("Tags", default=list, blank=True)
    epilot_created_at = models.DateTimeField("in epilot angelegt", null=True, blank=True)
    epilot_updated_at = models.DateTimeField("in epilot geändert", null=True, blank=True, db_index=True)
    epilot_deleted_at = models.DateTimeField("in epilot gelöscht", null=True, blank=True)
    payload = PayloadField(default=dict)
    synced_at = models.DateTimeField("synchronisiert")

    class Meta:
        abstract = True
        ordering = ["-epilot_updated_at"]

    def __str__(self) -> str:
        return self.title or self.epilot_id

    @property
    def is_deleted(self) -> bool:
        return self.epilot_deleted_at is not None


class Contact(MirroredEntity):
    """An epilot contact (customer)."""

    email = models.CharField("E-Mail", max_length=254, blank=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Kontakt"
        verbose_name_plural = "Kontakte"


class Opportunity(MirroredEntity):
    """An epilot opportunity: an expansion in planning."""

    customer = models.ForeignKey(Contact, verbose_name="Kunde", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="opportunities")
    customer_epilot_id = models.CharField(max_length=64, blank=True, db_index=True)
    street = models.CharField("Straße", max_length=200, blank=True)
    postal_code = models.CharField("PLZ", max_length=20, blank=True)
    city = models.CharField("Ort", max_length=100, blank=True)
    budget = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Opportunity"
        verbose_name_plural = "Opportunities"

    @property
    def address(self) -> str:
        return ", ".join(part for part in (self.street, f"{self.postal_code} {self.city}".strip()) if part)


class Order(MirroredEntity):
    """An epilot order: confirmed construction work. `amount_total` is in cents, as epilot keeps it."""

    amount_total = models.BigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    opportunity = models.ForeignKey(Opportunity, verbose_name="Opportunity", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="orders")
    opportunity_epilot_id = models.CharField(max_length=64, blank=True, db_index=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Auftrag"
        verbose_name_plural = "Aufträge"


class GenericEntity(MirroredEntity):
    """An entity of a further configured schema (for example `infrastructure_project`)."""

    schema = models.CharField(max_length=100, db_index=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = "Weitere Entität"
        verbose_name_plural = "Weitere Entitäten"
