"""The Celery app: `celery -A worker.celery_app worker` runs it; the API only publishes to it.

Long training jobs need different settings from Celery's defaults, each for a reason below
(see docs/service.md#celery-settings for the linked Celery issues).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, setup_logging, worker_init, worker_process_init

from service import logs
from service.context import prepare_database, reset_after_fork
from service.settings import Settings, get_settings
from worker import launcher_watch

FIT_TASK = "nexp.fit_job"
REQUEST_ID_HEADER = "nexp_request_id"  # the id of the request that queued a job, for its logs
VISIBILITY_MARGIN_S = 600  # on top of the hard time limit: a live job is never handed out twice
PUBLISH_TIMEOUT_S = 3.0  # POST /v1/jobs answers 503 this soon when the broker is down
EMBEDDED_POLL_S = 0.5  # the filesystem transport polls its folder: a job starts within this


def broker_options(settings: Settings) -> dict[str, Any]:
    # Redis hands an unacknowledged message to another worker after visibility_timeout: it must
    # outlast the longest job, or long jobs run twice (celery #5935, #5306).
    visibility = settings.hard_time_limit_s + VISIBILITY_MARGIN_S
    options: dict[str, Any] = {"visibility_timeout": visibility}
    if settings.embedded_broker:
        folder = settings.broker_dir
        options |= {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "polling_interval": EMBEDDED_POLL_S,
        }
    else:
        options |= {"socket_connect_timeout": PUBLISH_TIMEOUT_S, "socket_timeout": 30}
    return options


def prepare_broker(settings: Settings) -> None:
    """The embedded transport's folders must exist before anyone publishes or consumes."""
    if settings.embedded_broker:
        for name in ("queue", "control"):
            (settings.broker_dir / name).mkdir(parents=True, exist_ok=True)


def celery_config(settings: Settings) -> dict[str, Any]:
    transport = broker_options(settings)
    return {
        "broker_url": settings.broker,
        "broker_transport_options": transport,
        # No result backend: job state lives in the jobs table. Should one be configured, it
        # needs the same visibility_timeout for the same reason as the broker.
        "result_backend_transport_options": transport,
        "task_ignore_result": True,
        "broker_connection_timeout": PUBLISH_TIMEOUT_S,
        "broker_connection_retry_on_startup": True,  # a worker waits for a broker still starting
        "task_default_queue": settings.queue,
        # JSON only: a message is never unpickled.
        "task_serializer": "json",
        "accept_content": ["json"],
        # Ack after the task returns, so a job whose worker crashed is redelivered, not lost.
        "task_acks_late": True,
        # Without this, a job whose child was OOM-killed is acked and lost (celery #1628); the
        # task counts attempts itself and fails a job past NEXP_MAX_ATTEMPTS (poison loops, #5641).
        "task_reject_on_worker_lost": True,
        # A broker restart must not stop the fits in progress (Celery 6 will by default): they
        # need no broker to finish, and their job rows, not the messages, say they are done.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A busy worker must not hoard queued jobs that an idle worker could start.
        "worker_prefetch_multiplier": 1,
        # Soft limit: the task records `time_limit` and stops. Hard limit: the child is killed if
        # the soft one is not honoured. Only the prefork pool enforces either.
        "task_soft_time_limit": settings.time_limit_s,
        "task_time_limit": settings.hard_time_limit_s,
        "worker_pool": "prefork",
        # One job per accelerator; a fresh child per job frees all of its memory (CUDA included),
        # and the parent never touches CUDA, so forking stays safe (pytorch #40403).
        "worker_concurrency": 1,
        "worker_max_tasks_per_child": 1,
        "worker_send_task_events": False,
    }


def make_celery(settings: Settings) -> Celery:
    celery = Celery("nexp", include=["worker.tasks"])
    celery.conf.update(celery_config(settings))
    return celery


app = make_celery(get_settings())


@worker_init.connect
def _prepare(**_: object) -> None:
    """In the worker's parent, before any child forks: its device, broker folders, the jobs table."""
    from model.fit import resolve_device  # torch: the worker's, not every importer's

    settings = get_settings()
    try:
        resolve_device(settings.device)
    except ValueError as e:  # a worker without its GPU would fail every job it took
        raise SystemExit(f"NEXP_DEVICE: {e}") from None
    prepare_broker(settings)
    prepare_database(settings)


@worker_init.connect
def _watch_launcher(**_: object) -> None:
    """Started by `python -m api`: end with the launcher, even a SIGKILLed one. After _prepare, so
    Celery installs its SIGQUIT handler (cold shutdown) within moments; a SIGQUIT sooner ends a
    worker that has no pool yet all the same."""
    launcher_watch.start()


@celeryd_init.connect
def _json_logs_early(options: dict[str, Any], **_: object) -> None:
    """Before the worker's first warning (the one for running as root, say)."""
    logs.configure_logging(options.get("loglevel") or logging.INFO)


@setup_logging.connect
def _json_logs(loglevel: int | None = None, **_: object) -> None:
    """With a receiver connected, Celery configures no logging of its own: its lines, the tasks'
    and the libraries' are all JSON (service.logs)."""
    logs.configure_logging(loglevel or logging.INFO)


@worker_process_init.connect
def _child_started(**_: object) -> None:
    reset_after_fork()


def queue_depth(celery: Celery) -> int:
    """Messages waiting in the fit queue. Raises kombu's OperationalError when the broker is away."""
    with celery.connection_for_read() as conn:
        return int(conn.default_channel.queue_declare(celery.conf.task_default_queue).message_count)


def publish_fit(celery: Celery, job_id: str) -> None:
    """Queue one delivery of a job. Raises kombu's OperationalError when the broker is away."""
    celery.send_task(
        FIT_TASK, args=[job_id], retry=True,
        headers={REQUEST_ID_HEADER: logs.current().request_id},  # the API request's, if any
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
    )
