"""Use cases of the back-office; admin actions, API views, tasks and commands call these."""
