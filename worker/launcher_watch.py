"""A worker that `python -m api` started ends soon after its launcher, however the launcher went.

The launcher stops its worker itself (api/__main__.py), but one that is SIGKILLed (an OOM kill,
`docker kill`) cannot, and the worker runs in a session of its own, so no terminal or process
manager signal reaches it: it would live on, holding the embedded broker. The launcher passes its
pid in LAUNCHER_PID_ENV; a thread here checks once a second that it is still the worker's parent
(getppid works everywhere, unlike Linux's PR_SET_PDEATHSIG), and once it is not, asks for Celery's
cold shutdown (SIGQUIT, as the launcher does), then kills the worker's process group should that
not have ended it. Pool children need nothing more: Celery's cold shutdown ends them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

LAUNCHER_PID_ENV = "NEXP_LAUNCHER_PID"
CHECK_INTERVAL_S = 1.0
# Then SIGKILL, as the launcher would (api.__main__.WORKER_STOP_TIMEOUT_S): an idle worker's cold
# shutdown takes seconds, and one cut short cannot hand its job back to the embedded broker.
COLD_SHUTDOWN_GRACE_S = 30.0

logger = logging.getLogger(__name__)


def launcher_gone(launcher_pid: int) -> bool:
    # The launcher starts the worker as its child; an orphan's parent becomes init (or a
    # subreaper). getppid, unlike kill(pid, 0), is fooled neither by a zombie nor a reused pid.
    return os.getppid() != launcher_pid


def watch(launcher_pid: int) -> None:
    while not launcher_gone(launcher_pid):
        time.sleep(CHECK_INTERVAL_S)
    logger.warning("the launcher (pid %d) is gone: cold shutdown", launcher_pid)
    os.kill(os.getpid(), signal.SIGQUIT)
    time.sleep(COLD_SHUTDOWN_GRACE_S)  # a daemon thread: this ends with the process
    # The launcher started the worker leading a session: its group is the worker and its pool.
    os.killpg(os.getpgrp(), signal.SIGKILL)


def start() -> None:
    """Watch the launcher from a daemon thread, if one started this worker."""
    launcher_pid = os.environ.get(LAUNCHER_PID_ENV)
    if launcher_pid:
        threading.Thread(target=watch, args=(int(launcher_pid),), name="launcher-watch",
                         daemon=True).start()
