"""The daily task digest: each linked staff user gets one e-mail with their overdue and newly assigned steps."""
from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from projects.models import StaffProfile
from projects.selectors import open_steps

logger = logging.getLogger("projects.digest")
FIRST_DIGEST_LOOKBACK = dt.timedelta(days=1)


def task_digest_send(*, now: dt.datetime | None = None) -> int:
    """E-mail every opted-in user with an epilot user id and an address what is overdue or newly theirs; returns e-mails sent.

    "Newly assigned" means first seen assigned since the user's previous digest (the last day for
    a first one). A user with nothing to report gets no e-mail; a failed delivery is logged and
    retried by the next digest (the time of the last digest only moves on success).
    """
    now = now or timezone.now()
    sent = 0
    profiles = StaffProfile.objects.select_related("user").filter(task_digest=True, user__is_active=True).exclude(
        epilot_user_id="").exclude(user__email="")
    for profile in profiles:
        mine = open_steps().filter(assignees__contains=f",{profile.epilot_user_id},").select_related("execution")
        overdue = list(mine.filter(due_date__lt=now).order_by("due_date")[:200])
        since = profile.last_digest_at or now - FIRST_DIGEST_LOOKBACK
        new = list(mine.filter(assigned_at__gt=since).order_by("due_date", "id")[:200])
        if not overdue and not new:
            continue
        with translation.override(settings.LANGUAGE_CODE):
            context = {"user": profile.user, "overdue": overdue, "new": new, "now": now,
                       "inbox_url": settings.BACKOFFICE_BASE_URL.rstrip("/") + "/admin/projects/mirroredstep/?assignee=mine"}
            subject = _("Your workflow steps: %(overdue)d overdue, %(new)d new") % {"overdue": len(overdue), "new": len(new)}
            body = render_to_string("projects/email/task_digest.txt", context)
        try:
            send_mail(subject, body, None, [profile.user.email])
        except OSError as exc:  # SMTP refused or unreachable: the next digest reports the same steps again
            logger.warning("task digest for %s not sent: %s", profile.user, exc)
            continue
        StaffProfile.objects.filter(pk=profile.pk).update(last_digest_at=now)
        sent += 1
    logger.info("task digest: %d e-mails sent", sent)
    return sent
