"""Automation recipes: the guide's patterns set up from the back office, provisioned as epilot flows, drift shown."""
from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from projects import models
from projects.forms import AutomationRecipeForm
from projects.services.errors import ServiceError
from projects.services.recipes import FLOW_DELETED, flow_body, recipe_provision, recipe_remove
from projects.templatetags.backoffice import badge


@admin.register(models.AutomationRecipe)
class AutomationRecipeAdmin(admin.ModelAdmin):
    form = AutomationRecipeForm
    list_display = ["name", "pattern", "trigger", "definition_epilot_id", "enabled", "flow_id", "provisioned_at", "drift_badge"]
    list_filter = ["pattern", "enabled"]
    search_fields = ["name", "key", "flow_id", "definition_epilot_id"]
    readonly_fields = ["flow_id", "provisioned_at", "drift_display", "drift_checked_at", "body_preview"]
    actions = ["provision_recipes", "restore_recipes", "disable_recipes", "remove_recipes"]
    fieldsets = [
        (None, {"fields": ["key", "name", "pattern", "enabled", "definition_epilot_id"]}),
        (_("Status change / manual trigger"), {"fields": ["schema", "attribute", "value"]}),
        (_("Journey submission"), {"fields": ["journey_id", "field_mapping"]}),
        (_("Assignees and notification"), {"fields": ["assignees", "assign_steps", "email_template_id", "email_language"]}),
        (_("In epilot"), {"fields": ["flow_id", "provisioned_at", "drift_checked_at", "drift_display", "body_preview"]}),
    ]

    @admin.display(description=_("trigger"))
    def trigger(self, obj: models.AutomationRecipe) -> str:
        if obj.pattern == models.AutomationRecipe.Pattern.JOURNEY_SUBMISSION:
            return f"journey {obj.journey_id}"
        if obj.pattern == models.AutomationRecipe.Pattern.MANUAL:
            return f"{obj.schema} ({_('manual')})"
        return f"{obj.schema}.{obj.attribute} = {obj.value}"

    @admin.display(description=_("drift"))
    def drift_badge(self, obj: models.AutomationRecipe) -> str:
        if not obj.flow_id:
            return badge("pending", _("not provisioned"))
        return badge("failed", _("changed in epilot")) if obj.drift else badge("succeeded", _("as provisioned"))

    @admin.display(description=_("how the flow in epilot differs"))
    def drift_display(self, obj: models.AutomationRecipe) -> str:
        if not obj.drift:
            return "–"
        text = _("The flow was deleted in epilot.") if obj.drift == FLOW_DELETED else obj.drift
        return format_html('<pre id="recipe-drift" style="white-space:pre-wrap">{}</pre>', text)

    @admin.display(description=_("flow body sent to epilot"))
    def body_preview(self, obj: models.AutomationRecipe) -> str:
        if not obj.pk:
            return _("Save the recipe to see the flow it stands for.")
        body = json.dumps(flow_body(obj), indent=2, ensure_ascii=False)
        return format_html('<pre id="recipe-preview" style="white-space:pre-wrap">{}</pre>', body)

    def has_provision_automation_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("projects.provision_automation")

    @admin.action(description=_("Provision selected recipes in epilot (create or update)"), permissions=["provision_automation"])
    def provision_recipes(self, request: HttpRequest, queryset: QuerySet) -> None:
        for recipe in queryset:
            self._provision(request, recipe)

    @admin.action(description=_("Restore the flows of selected recipes in epilot"), permissions=["provision_automation"])
    def restore_recipes(self, request: HttpRequest, queryset: QuerySet) -> None:
        for recipe in queryset:
            self._provision(request, recipe)

    @admin.action(description=_("Disable selected recipes (also in epilot)"), permissions=["provision_automation"])
    def disable_recipes(self, request: HttpRequest, queryset: QuerySet) -> None:
        for recipe in queryset:
            recipe.enabled = False
            recipe.save(update_fields=["enabled"])
            if recipe.flow_id:
                self._provision(request, recipe)

    @admin.action(description=_("Delete the flows of selected recipes in epilot"), permissions=["provision_automation"])
    def remove_recipes(self, request: HttpRequest, queryset: QuerySet) -> None:
        for recipe in queryset:
            try:
                recipe_remove(recipe, user=request.user)
            except ServiceError as exc:
                self.message_user(request, f"{recipe.name}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, _("'%(name)s': its flow was deleted in epilot.") % {"name": recipe.name},
                                  messages.SUCCESS)

    def _provision(self, request: HttpRequest, recipe: models.AutomationRecipe) -> None:
        try:
            recipe, created = recipe_provision(recipe, user=request.user)
        except ServiceError as exc:
            self.message_user(request, f"{recipe.name}: {exc.message}", messages.ERROR)
            return
        message = _("'%(name)s' created in epilot (flow %(flow)s).") if created else \
            _("'%(name)s' updated in epilot (flow %(flow)s).")
        self.message_user(request, message % {"name": recipe.name, "flow": recipe.flow_id}, messages.SUCCESS)
