"""Code shared by the API and the workers: configuration, models, the Celery app, processors."""
