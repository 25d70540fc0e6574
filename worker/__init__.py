"""The Celery worker: its app and settings, the fit task, and the runner that fits one job."""
