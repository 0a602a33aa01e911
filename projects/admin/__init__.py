"""The back-office in the Django admin, one module per area; importing this package registers every admin.

Mirrored data is read-only here: the sync writes it, and every change goes to epilot through a
service (workflow starts, conversions, status writes, automation) and comes back on the next sync.
Actions and buttons are thin adapters: they parse the form, call one service, show its message;
what an intermediate page shows comes from selectors.
"""
from projects.admin import (  # noqa: F401 - registers the admins
    api_clients,
    areas,
    backoffice,
    entities,
    funnel,
    promises,
    recipes,
    steps,
    sync,
    webhooks,
    workflows,
)
