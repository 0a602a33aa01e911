"""The Celery application; settings come from Django settings prefixed CELERY_.

No default settings module is chosen here: `config/__init__.py` imports this module in every
process, so a default set here would win over the one `config/wsgi.py` picks for the web
process. Workers and beat name theirs (`DJANGO_SETTINGS_MODULE`, see the Procfiles); without
it they refuse to start with Django's ImproperlyConfigured.
"""
from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun, worker_process_init

from config.logging import current_request_id, current_task_id

app = Celery("ausbau_backoffice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _tune_worker_process(**kwargs) -> None:
    """Each worker process writes the mirror: tune it once, as it starts."""
    from config.tuning import tune_process

    tune_process()


@before_task_publish.connect
def _carry_request_id(headers: dict | None = None, **kwargs) -> None:
    """A task queued while a request (or another task) runs carries its request id along."""
    if headers is not None and current_request_id.get():
        headers.setdefault("request_id", current_request_id.get())


@task_prerun.connect
def _log_with_task_ids(task_id: str | None = None, task=None, **kwargs) -> None:
    _set_ids(task_id, getattr(task.request, "request_id", None) if task is not None else None)


@task_postrun.connect
def _forget_task_ids(**kwargs) -> None:
    _set_ids(None, None)


def _set_ids(task: str | None, request: str | None) -> None:
    current_task_id.set(task)
    current_request_id.set(request)
