"""Settings for a developer's machine: `make run`."""
from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="") or "local-only-insecure-key-do-not-use-in-production"
WHITENOISE_AUTOREFRESH = DEBUG
