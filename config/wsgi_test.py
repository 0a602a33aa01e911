"""The WSGI app under the test settings, for schemathesis (it calls the app in-process, no socket)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

application = get_wsgi_application()
