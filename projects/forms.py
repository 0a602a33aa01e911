"""Forms of the admin's intermediate pages."""
from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from projects.models import ApiClient, AutomationRecipe, AutomationRule, StepJob, WorkflowDefinition
from projects.selectors import automation_owning_trigger
from projects.services.api_clients import parse_throttle_rate

KNOWN_OPPORTUNITY_STATUSES = ["ausstehend", "bearbeitung", "geschlossen", "abgebrochen"]


def definition_choices() -> forms.ModelChoiceField:
    queryset = WorkflowDefinition.objects.filter(enabled=True, removed_in_epilot=False).order_by("engine", "name")
    return forms.ModelChoiceField(queryset=queryset, label=_("Workflow"), empty_label=None,
                                  help_text=_("V1 workflows and V2 flows; the matching epilot API is chosen for you."))


class StartWorkflowForm(forms.Form):
    definition = forms.ModelChoiceField(queryset=WorkflowDefinition.objects.none())
    allow_duplicate = forms.BooleanField(
        required=False, label=_("Also start where this workflow runs already"),
        help_text=_("Without this tick a workflow that runs already is not started a second time."))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["definition"] = definition_choices()
        default = (
            self.fields["definition"].queryset.filter(epilot_id=settings.DEFAULT_WORKFLOW_DEFINITION).order_by("engine").first()
        )
        if default and not self.is_bound:
            self.initial.setdefault("definition", default.pk)


class ConvertForm(forms.Form):
    definition = forms.ModelChoiceField(queryset=WorkflowDefinition.objects.none())
    amount = forms.DecimalField(label=_("Order amount (EUR)"), min_value=Decimal("0"), max_digits=14, decimal_places=2,
                                required=False, help_text=_("Default: the opportunity's budget"))
    target_status = forms.CharField(label=_("Status of the opportunity afterwards"), max_length=100)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["definition"] = definition_choices()
        self.fields["definition"].label = _("Workflow on the order")
        default = (
            self.fields["definition"].queryset.filter(epilot_id=settings.DEFAULT_WORKFLOW_DEFINITION).order_by("engine").first()
        )
        if not self.is_bound:
            if default:
                self.initial.setdefault("definition", default.pk)
            self.initial.setdefault("target_status", settings.CONVERSION_TARGET_STATUS)

    def amount_cents(self) -> int | None:
        amount = self.cleaned_data.get("amount")
        return int(amount * 100) if amount is not None else None


class StatusForm(forms.Form):
    status = forms.CharField(label=_("New status"), max_length=100,
                             widget=forms.TextInput(attrs={"list": "known-statuses", "autocomplete": "off"}))
    expected_updated_at = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def clean_expected_updated_at(self) -> str:
        value = self.cleaned_data["expected_updated_at"]
        try:
            parsed = dt.datetime.fromisoformat(value)
            (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
        except (ValueError, OverflowError):
            raise forms.ValidationError(
                _("The version of the opportunity you read is missing or unreadable; please reload the page.")
            ) from None
        return value


class ApiClientForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=ApiClient.Scope.choices, widget=forms.CheckboxSelectMultiple, initial=["read"])

    class Meta:
        model = ApiClient
        fields = ["name", "scopes", "throttle_rate"]

    def clean_throttle_rate(self) -> str:
        rate = self.cleaned_data["throttle_rate"]
        try:
            parse_throttle_rate(rate)
        except ValueError:
            raise forms.ValidationError("Format: Anzahl/Zeitraum, z. B. 600/min, 10/s, 5000/hour") from None
        return rate


class AutomationRuleForm(forms.ModelForm):
    """A local rule; a trigger has one owner, so one an enabled epilot automation covers is refused."""

    class Meta:
        model = AutomationRule
        fields = ["name", "enabled", "schema", "attribute", "value", "definition"]

    def clean(self) -> dict:
        cleaned = super().clean()
        definition = cleaned.get("definition")
        if cleaned.get("enabled") and definition is not None:
            owner = automation_owning_trigger(schema=cleaned.get("schema", ""), attribute=cleaned.get("attribute", ""),
                                              value=cleaned.get("value", ""), definition_epilot_id=definition.epilot_id)
            if owner:
                raise forms.ValidationError(
                    _("The epilot automation '%(name)s' owns this trigger. Both would start the workflow; switch the "
                      "automation off in epilot or leave the rule disabled.") % {"name": owner.name})
        return cleaned


def assignee_list(value: str) -> list[str]:
    """epilot user ids from a comma- or space-separated text."""
    return [part for part in value.replace(",", " ").split() if part]


class StepOperationForm(forms.Form):
    """What to apply to the selected steps; assignees and due date only for the operations that take them."""

    operation = forms.ChoiceField(label=_("Operation"), choices=StepJob.Operation.choices)
    assignees = forms.CharField(label=_("Assign to (epilot user ids)"), required=False, max_length=1000,
                                help_text=_("Separated by commas; they replace the current assignees."))
    due_date = forms.DateTimeField(label=_("Due"), required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                   help_text=_("Leave empty to clear the due date."))

    def clean(self) -> dict:
        data = super().clean()
        if data.get("operation") == StepJob.Operation.ASSIGN:
            data["assignee_ids"] = assignee_list(data.get("assignees") or "")
            if not data["assignee_ids"]:
                self.add_error("assignees", _("Name at least one epilot user id."))
            elif any(len(item) > 64 for item in data["assignee_ids"]):
                self.add_error("assignees", _("An epilot user id has at most 64 characters."))
        return data


class CloseExecutionForm(forms.Form):
    reasons = forms.MultipleChoiceField(label=_("Closing reasons"), required=False, widget=forms.CheckboxSelectMultiple)
    description = forms.CharField(label=_("Description"), required=False, max_length=2000,
                                  widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, reasons: list[dict[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reasons"].choices = [(reason["id"], reason["title"]) for reason in reasons]


class AutomationRecipeForm(forms.ModelForm):
    """A recipe's parameters; which ones a pattern needs is checked here, the trigger's owner when provisioning."""

    class Meta:
        model = AutomationRecipe
        fields = ["key", "name", "pattern", "enabled", "definition_epilot_id", "schema", "attribute", "value", "journey_id",
                  "field_mapping", "assignees", "assign_steps", "email_template_id", "email_language"]

    def clean(self) -> dict:
        data = super().clean()
        pattern = data.get("pattern")
        if pattern == AutomationRecipe.Pattern.STATUS_CHANGE:
            for name in ("schema", "attribute", "value"):
                if not data.get(name):
                    self.add_error(name, _("A status change needs the entity type, the attribute and its value."))
        elif pattern == AutomationRecipe.Pattern.MANUAL and not data.get("schema"):
            self.add_error("schema", _("A manual trigger needs the entity type it is started from."))
        elif pattern == AutomationRecipe.Pattern.PROMISE_NOTICE and not data.get("email_template_id"):
            self.add_error("email_template_id", _("A customer notice needs the e-mail template it sends."))
        elif pattern == AutomationRecipe.Pattern.JOURNEY_SUBMISSION:
            try:
                uuid.UUID(str(data.get("journey_id") or ""))
            except ValueError:
                self.add_error("journey_id", _("A journey submission needs the journey's UUID."))
        if pattern != AutomationRecipe.Pattern.PROMISE_NOTICE and not data.get("definition_epilot_id"):
            self.add_error("definition_epilot_id", _("Give the workflow the recipe starts."))
        mapping = data.get("field_mapping") or []
        if not isinstance(mapping, list) or not all(
                isinstance(item, dict) and isinstance(item.get("source"), str) and isinstance(item.get("target"), str)
                for item in mapping):
            self.add_error("field_mapping", _('A list of {"source": "…", "target": "…"}.'))
        if not isinstance(data.get("assignees") or [], list):
            self.add_error("assignees", _("A list of epilot user ids."))
        steps = data.get("assign_steps") or []
        if not isinstance(steps, list) or not all(
                isinstance(item, dict) and isinstance(item.get("user_ids"), list)
                and all(isinstance(user, int) for user in item["user_ids"]) for item in steps):
            self.add_error("assign_steps", _('A list of {"step_id": "…", "step_name": "…", "user_ids": [123]}.'))
        return data


class PromiseForm(forms.Form):
    """A promised date for one milestone of an order; empty removes it. Sent with the order's version staff saw."""

    milestone = forms.ChoiceField(label=_("Milestone"), choices=[("connected", _("connected (house connection built)")),
                                                                 ("activated", _("activated (service live)"))])
    promised_on = forms.DateField(label=_("Promised date"), required=False,
                                  widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
                                  help_text=_("Empty removes the promise."))
    expected_updated_at = forms.CharField(widget=forms.HiddenInput, max_length=64)
