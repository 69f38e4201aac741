"""Every job family with an executor of its own: importing this registers them. A new job
kind with work outside the worker process adds its module here (README, Adding a job kind)."""

from workers import file_jobs  # noqa: F401  (registers the `file` executor)
from workers.deploy import pipeline  # noqa: F401  (registers the `deploy` executor)
