"""Celery worker fleets: thin tasks in `tasks`, the work in plain modules beside them."""
