import logging

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger("projects")


class ProjectsConfig(AppConfig):
    name = "projects"
    verbose_name = _("Fibre rollout")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from integrations.connection import connection_info
        from projects import checks  # noqa: F401 - registers the system checks
        from projects.mirror.changes import entities_changed, projects_changed
        from projects.services.areas import areas_on_projects_changed
        from projects.services.projects import projects_on_entities_changed
        from projects.services.promises import promises_on_entities_changed, promises_on_projects_changed

        # What is derived from the mirror listens to its change event (services/changes.py).
        entities_changed.connect(projects_on_entities_changed, dispatch_uid="projects")
        projects_changed.connect(areas_on_projects_changed, dispatch_uid="rollout-areas")
        entities_changed.connect(promises_on_entities_changed, dispatch_uid="promises-of-orders")
        projects_changed.connect(promises_on_projects_changed, dispatch_uid="promises-at-addresses")
        # The inbox names assignees by their staff profile: a changed profile or user shows at once.
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from projects.models import StaffProfile
        from projects.selectors import forget_staff_names

        for model in (StaffProfile, get_user_model()):
            post_save.connect(forget_staff_names, sender=model, dispatch_uid=f"staff-names-{model.__name__}")
            post_delete.connect(forget_staff_names, sender=model, dispatch_uid=f"staff-names-delete-{model.__name__}")

        info = connection_info()
        if info.mode == "embedded-sandbox":
            logger.warning("epilot: %s (sandbox data in %s)", info.label, info.sandbox_db)
        else:
            logger.info("epilot: %s", info.label)
