"""System checks that guard rules no single test could: every admin action declares a permission."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core import checks


@checks.register(checks.Tags.admin, checks.Tags.security)
def admin_actions_declare_permissions(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """An admin action without `permissions` (or with only `view`) is offered to every user who can see the list.

    Django then runs it for a Viewer too, so such an action is an error here.
    """
    errors = []
    for model, model_admin in admin.site._registry.items():
        for func, name, _description in model_admin._get_base_actions():
            permissions = set(getattr(func, "allowed_permissions", ()))
            if not permissions - {"view"}:
                errors.append(checks.Error(
                    f"Admin action {name!r} of {model._meta.label} declares no permission that changes data.",
                    hint="Use @admin.action(permissions=[...]) with change, delete or a custom permission.",
                    obj=type(model_admin), id="projects.E001"))
    return errors


@checks.register(checks.Tags.security)
def webhook_secrets_are_well_formed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A malformed entry of EPILOT_WEBHOOK_SECRETS is skipped when deliveries are verified; say so at start-up."""
    from projects.services.webhooks import malformed_webhook_secrets

    return [checks.Warning(f"Entry {number} of EPILOT_WEBHOOK_SECRETS is not 'whsec_' followed by base64; it is ignored.",
                           hint="Copy the signing secret exactly as epilot showed it.", id="projects.W002")
            for number in malformed_webhook_secrets()]
