"""Create (or reset) the demo admin login that `make run` prints."""
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Create or reset the demo superuser for trying the back-office locally."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="wuelfrath-demo")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.SETTINGS_MODULE == "config.settings.production":
            raise CommandError("The demo login has a published password: it is never created under production settings.")
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=options["username"], defaults={"is_staff": True, "is_superuser": True, "email": "demo@example.org"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(options["password"])
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} demo login: user '{options['username']}', password '{options['password']}'")
        )
