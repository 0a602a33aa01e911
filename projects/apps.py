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

        # What is derived from the mirror listens to its change event (services/changes.py).
        entities_changed.connect(projects_on_entities_changed, dispatch_uid="projects")
        projects_changed.connect(areas_on_projects_changed, dispatch_uid="rollout-areas")

        info = connection_info()
        if info.mode == "embedded-sandbox":
            logger.warning("epilot: %s (sandbox data in %s)", info.label, info.sandbox_db)
        else:
            logger.info("epilot: %s", info.label)
