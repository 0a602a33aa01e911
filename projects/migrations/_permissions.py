"""Shared by data migrations (Django's loader skips modules starting with '_'): give groups permissions by codename."""


def grant_to_groups(apps, codenames_by_group: dict[str, list[str]]) -> None:
    """Create any missing permissions, then add the named ones of `projects` to each existing group."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, codenames in codenames_by_group.items():
        group = group_model.objects.filter(name=name).first()
        if group is not None:
            group.permissions.add(*permission_model.objects.filter(content_type__app_label="projects", codename__in=codenames))
