"""Labels of other apps' fields shown in our admin that their own catalogues leave in English; listed here so
makemessages puts them into our German catalogue (LOCALE_PATHS comes before the apps' catalogues)."""
from django.utils.translation import gettext_noop

LABELS = [
    gettext_noop("Session key hash (sha256)"),  # django-axes AccessLog
    gettext_noop("Exchange"),  # django-celery-beat PeriodicTask
]
