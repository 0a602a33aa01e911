"""The Celery application; settings come from Django settings prefixed CELERY_.

No default settings module is chosen here: `config/__init__.py` imports this module in every
process, so a default set here would win over the one `config/wsgi.py` picks for the web
process. Workers and beat name theirs (`DJANGO_SETTINGS_MODULE`, see the Procfiles); without
it they refuse to start with Django's ImproperlyConfigured.
"""
from celery import Celery
from celery.signals import worker_process_init

app = Celery("ausbau_backoffice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _tune_worker_process(**kwargs) -> None:
    """Each worker process writes the mirror: tune it once, as it starts."""
    from config.tuning import tune_process

    tune_process()
