"""A Python client for the Neural Experts service.

    from nexp_client import Client
    job = Client().fit("photo.png", preset="fast", steps=150)
    job.wait(progress=True)
    image = job.reconstruction(width=1024, height=1024)
"""

from nexp_client._calls import AudioExperts, Retry
from nexp_client.aio import AsyncClient, AsyncJob
from nexp_client.client import Client, Job
from nexp_client.errors import ApiError, JobFailed
from nexp_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "ApiError", "AsyncClient", "AsyncJob", "AudioExperts", "Client", "Job", "JobFailed", "Retry",
    "WebhookVerificationError", "verify_webhook",
]
