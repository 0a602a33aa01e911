"""Mirrored epilot entities: contacts, opportunities, orders and further schemas."""
from __future__ import annotations

from django.db import models
from django.db.models.fields.related_descriptors import ForwardManyToOneDescriptor
from django.utils.translation import gettext_lazy as _


class PayloadField(models.JSONField):
    """A JSONField that keeps bulk inserts on PostgreSQL on plain VALUES.

    Django 5.2 bulk-inserts through UNNEST of per-column arrays on PostgreSQL; psycopg escapes
    large JSON documents inside a text array character by character, which made a sync page
    several times slower. Having `get_placeholder` opts the insert out of UNNEST.
    """

    def get_placeholder(self, value, compiler, connection):
        return "%s"


class _MirroredOrNone(ForwardManyToOneDescriptor):
    """The related entity, or None while the mirror does not hold it (or the row names none)."""

    def get_object(self, instance):
        if not all(self.field.get_local_related_value(instance)):
            return None
        return self.get_queryset(instance=instance).filter(self.field.get_reverse_related_filter(instance)).first()


class EpilotRelation(models.ForeignObject):
    """A relation to another mirrored entity that a join on its epilot id resolves: no column of its own.

    The row keeps the epilot id it names (`from_fields`), so the two can be mirrored in either order
    and nothing is written when the other one arrives. Reads as None while the other is not mirrored.
    """

    forward_related_accessor_class = _MirroredOrNone
    db_constraint = False  # nothing in the database to constrain (the schema editors ask foreign keys)


class MirroredEntity(models.Model):
    """Columns every mirrored epilot entity has; `payload` is the entity exactly as epilot sent it."""

    epilot_id = models.CharField(_("epilot id"), max_length=64, unique=True)
    title = models.CharField(_("title"), max_length=500, blank=True)
    status = models.CharField(_("status"), max_length=100, blank=True, db_index=True)
    tags = models.JSONField(_("tags"), default=list, blank=True)
    epilot_created_at = models.DateTimeField(_("created in epilot"), null=True, blank=True)
    epilot_updated_at = models.DateTimeField(_("changed in epilot"), null=True, blank=True, db_index=True)
    epilot_deleted_at = models.DateTimeField(_("deleted in epilot"), null=True, blank=True)
    payload = PayloadField(_("payload"), default=dict)
    synced_at = models.DateTimeField(_("synchronised"))

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

    email = models.CharField(_("e-mail"), max_length=254, blank=True)
    search_text = models.TextField(_("search words"), blank=True, default="", editable=False,
                                   help_text=_("name, customer number and e-mail addresses, folded for the header search"))

    class Meta(MirroredEntity.Meta):
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")


class Opportunity(MirroredEntity):
    """An epilot opportunity: an expansion in planning."""

    customer = EpilotRelation(Contact, verbose_name=_("customer"), from_fields=["customer_epilot_id"], to_fields=["epilot_id"],
                              null=True, blank=True, on_delete=models.DO_NOTHING, related_name="opportunities")
    customer_epilot_id = models.CharField(_("customer (epilot id)"), max_length=64, blank=True, db_index=True)
    street = models.CharField(_("street"), max_length=200, blank=True)
    postal_code = models.CharField(_("postal code"), max_length=20, blank=True)
    city = models.CharField(_("city"), max_length=100, blank=True)
    address_key = models.CharField(_("address key"), max_length=240, blank=True,  # indexed in Meta
                                   help_text=_("postal code, street and house number normalised, as rollout areas match them"))
    budget = models.DecimalField(_("budget"), max_digits=14, decimal_places=2, null=True, blank=True)
    latitude = models.FloatField(_("latitude"), null=True, blank=True)
    longitude = models.FloatField(_("longitude"), null=True, blank=True)
    search_text = models.TextField(_("search words"), blank=True, default="", editable=False,
                                   help_text=_("title, number and address, folded for the header search"))

    class Meta(MirroredEntity.Meta):
        verbose_name = _("opportunity")
        verbose_name_plural = _("opportunities")
        indexes = [
            # By address, with what a building's figures read of each opportunity at it (services/areas.py): the
            # database answers from the index alone, without reading every such row and its payload.
            models.Index(fields=["address_key", "status", "epilot_deleted_at", "latitude", "longitude"],
                         name="opportunity_at_address"),
        ]

    @property
    def address(self) -> str:
        return ", ".join(part for part in (self.street, f"{self.postal_code} {self.city}".strip()) if part)


class Order(MirroredEntity):
    """An epilot order: confirmed construction work. `amount_total` is in cents, as epilot keeps it."""

    amount_total = models.BigIntegerField(_("amount (cents)"), null=True, blank=True)
    currency = models.CharField(_("currency"), max_length=3, blank=True)
    opportunity = models.ForeignKey(Opportunity, verbose_name=_("opportunity"), null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="orders")
    opportunity_epilot_id = models.CharField(_("opportunity (epilot id)"), max_length=64, blank=True, db_index=True)
    search_text = models.TextField(_("search words"), blank=True, default="", editable=False,
                                   help_text=_("title and order number, folded for the header search"))

    class Meta(MirroredEntity.Meta):
        verbose_name = _("order")
        verbose_name_plural = _("orders")


class GenericEntity(MirroredEntity):
    """An entity of a further configured schema (for example `infrastructure_project`)."""

    schema = models.CharField(_("entity type"), max_length=100, db_index=True)

    class Meta(MirroredEntity.Meta):
        verbose_name = _("further entity")
        verbose_name_plural = _("further entities")


class OpportunityItem(models.Model):
    """An order named in an opportunity's `items` relation, kept as a row so a join resolves it in both directions.

    An order's opportunity is its own `opportunity` relation, else the opportunity whose items name it;
    rows are replaced whenever their opportunity is mirrored anew (services/pages.py).
    """

    opportunity_epilot_id = models.CharField(_("opportunity (epilot id)"), max_length=64)
    order_epilot_id = models.CharField(_("order (epilot id)"), max_length=64, db_index=True)

    class Meta:
        verbose_name = _("order named by an opportunity")
        verbose_name_plural = _("orders named by opportunities")
        constraints = [models.UniqueConstraint(fields=["opportunity_epilot_id", "order_epilot_id"],
                                               name="an_item_once_per_opportunity")]

    def __str__(self) -> str:
        return f"{self.opportunity_epilot_id} → {self.order_epilot_id}"
