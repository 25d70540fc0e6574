"""What the API process holds while it runs: built at startup, closed at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery

from api.rendering import Renderer
from service.context import Context, prepare_database, use_torch_threads
from service.quotas import Quotas, make_windows
from service.settings import Settings
from worker.celery_app import make_celery, prepare_broker


@dataclass(frozen=True)
class Services:
    ctx: Context
    celery: Celery
    renderer: Renderer
    quotas: Quotas

    @classmethod
    def start(cls, settings: Settings) -> Services:
        prepare_broker(settings)
        prepare_database(settings)
        use_torch_threads(settings)
        ctx = Context.build(settings)
        quotas = Quotas(settings, make_windows(settings, ctx.sessions))
        return cls(ctx, make_celery(settings), Renderer(ctx.storage, settings), quotas)

    def close(self) -> None:
        self.quotas.windows.close()
        self.celery.close()
        self.ctx.engine.dispose()
