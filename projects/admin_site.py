"""The admin site: the index groups the models by what staff do, not by Django app."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

# (group, models by object name, in the order staff look for them); anything not named goes last.
GROUPS = [
    ("projects", _("Projects"), ["AusbauProject", "RolloutArea", "Opportunity", "Order", "Contact", "GenericEntity",
                                 "Conversion", "AreaAddress", "Promise", "PromiseAlert", "ForecastCurve"]),
    ("workflows", _("Workflows & tasks"), ["MirroredStep", "WorkflowExecution", "WorkflowDefinition", "WorkflowStart",
                                           "WorkflowStartJob", "StepJob", "AutomationRecipe", "AutomationRule", "RuleFiring"]),
    ("sync", _("Synchronisation"), ["SyncRun", "Reconciliation", "SchemaAttribute", "WebhookEvent", "WebhookSubscription",
                                    "QuarantinedEntity", "SyncState",
                                    "PeriodicTask", "IntervalSchedule", "CrontabSchedule", "ClockedSchedule",
                                    "SolarSchedule"]),
    ("administration", _("Administration"), ["EpilotWrite", "ApiClient", "StaffProfile", "User", "Group", "AccessAttempt",
                                              "AccessFailureLog", "AccessLog"]),
]


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Ausbau Backoffice"
    site_title = "Ausbau Backoffice"
    index_title = _("Fibre rollout · Stadtwerke Wülfrath")

    def get_urls(self) -> list:
        """The admin's own pages plus the header search and the building file."""
        from django.urls import path

        from projects.admin.search import building_file_view, search_view

        return [
            path("search/", self.admin_view(search_view), name="search"),
            path("building/", self.admin_view(building_file_view), name="building_file"),
            *super().get_urls(),
        ]

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict]:
        """On the index, the models in four groups; an app's own page stays as Django builds it."""
        apps = super().get_app_list(request, app_label)
        if app_label:
            return apps
        models = {model["object_name"]: (app, model) for app in apps for model in app["models"]}
        grouped, placed = [], set()
        for key, name, object_names in GROUPS:
            members = [models[object_name] for object_name in object_names if object_name in models]
            placed.update(object_name for object_name in object_names if object_name in models)
            if members:
                first_app = members[0][0]
                grouped.append({**first_app, "name": name, "app_label": first_app["app_label"], "group": key,
                                "models": [model for _, model in members]})
        rest = [model for object_name, (_, model) in models.items() if object_name not in placed]
        if rest and grouped:
            grouped[-1]["models"].extend(rest)
        return grouped


class BackofficeAdminConfig(AdminConfig):
    default_site = "projects.admin_site.BackofficeAdminSite"
