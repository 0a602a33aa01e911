"""`manage.py provision_automation`: set up an automation recipe and provision it, or provision every enabled recipe."""
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from projects.forms import AutomationRecipeForm
from projects.models import AutomationRecipe
from projects.services.errors import ServiceError
from projects.services.recipes import recipe_provision, recipes_provision_enabled

PATTERNS = {"status-change": AutomationRecipe.Pattern.STATUS_CHANGE,
            "journey-submission": AutomationRecipe.Pattern.JOURNEY_SUBMISSION,
            "manual": AutomationRecipe.Pattern.MANUAL}


class Command(BaseCommand):
    help = ("Create or update an automation recipe and provision its flow in epilot (idempotent by the recipe's key); "
            "without --recipe, provision every enabled recipe.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--recipe", choices=sorted(PATTERNS), help="The pattern: status-change, journey-submission, manual.")
        parser.add_argument("--definition", help="epilot id of the workflow to start (e.g. wfQpwhJF6J).")
        parser.add_argument("--schema", default="opportunity", help="Entity type of the trigger (status change, manual).")
        parser.add_argument("--attribute", default="status", help="Attribute whose change triggers (status change).")
        parser.add_argument("--value", default="bearbeitung", help="Value that triggers (status change).")
        parser.add_argument("--journey", help="UUID of the journey (journey submission).")
        parser.add_argument("--email-template", default="", help="epilot e-mail template that notifies the team.")
        parser.add_argument("--email-language", choices=["de", "en"], default="de")
        parser.add_argument("--name", help="Name of the recipe (and of its flow); its key is derived from it.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if not options["recipe"]:
                results = recipes_provision_enabled(actor="command")
                for recipe, created in results:
                    self.stdout.write(f"{'Created' if created else 'Updated'} '{recipe.name}' (flow {recipe.flow_id}).")
                self.stdout.write(self.style.SUCCESS(f"{len(results)} recipes provisioned."))
                return
            recipe = self._recipe(options)
            recipe, created = recipe_provision(recipe, actor="command")
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"{'Created' if created else 'Updated'} '{recipe.name}' (flow {recipe.flow_id})."))

    def _recipe(self, options: dict[str, Any]) -> AutomationRecipe:
        """The recipe the options describe, created or updated by its key; raises CommandError on bad options."""
        if not options["definition"]:
            raise CommandError("--definition is required with --recipe.")
        pattern = PATTERNS[options["recipe"]]
        name = options["name"] or self._default_name(pattern, options)
        key = slugify(name)[:60] or "recipe"
        data = {"key": key, "name": name, "pattern": pattern, "enabled": True, "definition_epilot_id": options["definition"],
                "schema": options["schema"], "attribute": options["attribute"], "value": options["value"],
                "journey_id": options["journey"] or "", "field_mapping": [], "assignees": [], "assign_steps": [],
                "email_template_id": options["email_template"], "email_language": options["email_language"]}
        existing = AutomationRecipe.objects.filter(key=key).first()
        if existing is not None:
            data["field_mapping"], data["assignees"], data["assign_steps"] = (existing.field_mapping, existing.assignees,
                                                                             existing.assign_steps)
        for name in ("field_mapping", "assignees", "assign_steps"):  # a form takes JSON fields as JSON text
            data[name] = json.dumps(data[name])
        form = AutomationRecipeForm(data=data, instance=existing)
        if not form.is_valid():
            problems = "; ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items())
            raise CommandError(f"Invalid recipe: {problems}")
        return form.save()

    @staticmethod
    def _default_name(pattern: str, options: dict[str, Any]) -> str:
        if pattern == AutomationRecipe.Pattern.JOURNEY_SUBMISSION:
            return f"Journey {options['journey']} → {options['definition']}"
        if pattern == AutomationRecipe.Pattern.MANUAL:
            return f"Manual on {options['schema']} → {options['definition']}"
        return f"{options['schema']} {options['attribute']} = {options['value']} → {options['definition']}"
