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

        info = connection_info()
        if info.mode == "embedded-sandbox":
            logger.warning("epilot: %s (sandbox data in %s)", info.label, info.sandbox_db)
        else:
            logger.info("epilot: %s", info.label)
