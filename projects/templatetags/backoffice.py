"""Template helpers for the admin: status badges and the dashboard."""
from decimal import Decimal

from django import template
from django.utils.html import format_html

from projects.admin.areas import take_up_gauge
from projects.formatting import format_amount, format_euros
from projects.selectors import (
    areas_overview,
    dashboard_stats,
    epilot_user_id_of,
    staff_names,
    sync_status,
    task_counts,
)
from projects.services.funnel import funnels_by_area
from projects.services.health import health_report, waiting_work
from projects.services.webhooks import webhook_health

register = template.Library()

STATUS_COLOURS = {
    # epilot opportunity statuses, as epilot has them
    "ausstehend": "#6c757d", "bearbeitung": "#0d6efd", "geschlossen": "#198754", "abgebrochen": "#dc3545",
    # order statuses (pricing API)
    "draft": "#6c757d", "quote": "#6f42c1", "placed": "#0d6efd", "completed": "#198754", "cancelled": "#dc3545",
    # workflow execution statuses
    "STARTED": "#0d6efd", "DONE": "#198754", "CLOSED": "#6c757d",
    # project phases
    "planning": "#6c757d", "approved": "#6f42c1", "construction": "#fd7e14",
    # audit and sync results
    "succeeded": "#198754", "failed": "#dc3545", "conflict": "#fd7e14", "pending": "#6c757d", "running": "#0d6efd",
    "queued": "#6c757d", "skipped": "#adb5bd", "done": "#198754", "started": "#0d6efd", "refused": "#fd7e14",
}


def badge(value: str, label: str | None = None) -> str:
    colour = STATUS_COLOURS.get(value, "#495057")
    return format_html('<span class="badge" style="background:{};color:#fff;padding:2px 8px;border-radius:10px;'
                       'font-size:11px;white-space:nowrap">{}</span>', colour, label or value or "–")


@register.simple_tag
def status_badge(value: str, label: str | None = None) -> str:
    return badge(value, label)


@register.filter
def money(cents: int | None, currency: str = "EUR") -> str:
    """Cents as money in the active language (epilot keeps order amounts in cents)."""
    return format_amount(cents, currency)


@register.filter
def euros(amount: Decimal | None) -> str:
    """An amount in euros (an opportunity's budget) as money in the active language."""
    return format_euros(amount)


@register.filter
def colleagues(user_ids: list[str]) -> str:
    """epilot user ids as the linked colleagues' names, else the ids."""
    names = staff_names()
    return ", ".join(names.get(str(user), str(user)) for user in user_ids or []) or "–"


@register.inclusion_tag("admin/projects/dashboard.html", takes_context=True)
def ausbau_dashboard(context: dict) -> dict:
    user = context.get("user")
    funnels = funnels_by_area()
    return {"stats": dashboard_stats(), "health": health_report(include_sync=False),
            "tasks": task_counts(epilot_user_id=epilot_user_id_of(user)),
            "areas": [(area, figures, take_up_gauge(figures), funnels.get(area.pk, ([], 0)))
                      for area, figures in areas_overview()],
            "webhooks": webhook_health(), "waiting": waiting_work(), "completeness": sync_status()}
