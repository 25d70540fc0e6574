"""Worker crashes mid-fit: `python -m bench faults` (`--quick`: 2 kills a mode; `--steps N`, a
dry run: N-step fits, 1 kill a mode).

A private service (bench.stack: Redis, the API, one worker). One job at a time is uploaded, and
once its fit passes a chosen step the worker is SIGKILLed with its pool child (a crashed
machine), started again, and the job followed to its end. Twice over, killed at the same steps:
with snapshots off (NEXP_SNAPSHOT_EVERY_S=0: the redelivered job starts again from step 0) and
on (it resumes from its last snapshot). Reported per mode: jobs lost (not succeeded: must be 0),
results stored twice (a job whose checkpoint two attempts stored, counted from the worker's
log: must be 0) and the steps redone per kill: where the fit was when it was killed, less the
step its next attempt started from. `python -m bench` exits non-zero when a job was lost.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.report import Section, cpu_name, table
from bench.soak import make_inputs, settings_of, warm_up
from bench.stack import Stack

STEPS = {"full": 3000, "quick": 1500}  # a 16 x 16 image: tens of steps a second on one thread
KILLS = {"full": 5, "quick": 2}
SNAPSHOT_EVERY_S = 2.0  # the service's default is 15 s; shorter keeps each kill's fit short
KILL_BETWEEN = (0.3, 0.6)  # the kill falls at a step drawn in this share of the fit
FOLLOW_S = 600  # a fit redone from step 0 on a busy machine
POLL_S = 0.05
MODES = {"restart from step 0 (snapshots off)": 0.0,
         f"resume (a snapshot every {SNAPSHOT_EVERY_S:g} s)": SNAPSHOT_EVERY_S}


def read(client: httpx.Client, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/jobs/{job_id}")
    answer.raise_for_status()
    job: dict[str, Any] = answer.json()
    return job


def wait_for_step(client: httpx.Client, job_id: str, step: int, snapshots: bool) -> None:
    """Until the fit has reported `step` (and, when it takes them, stored a snapshot)."""
    deadline = time.monotonic() + FOLLOW_S
    while time.monotonic() < deadline:
        job = read(client, job_id)
        reached = (job["progress"] or {}).get("step", 0) >= step and job["status"] == "running"
        if reached and (not snapshots or job["snapshot_step"] is not None):
            return
        if job["status"] in ("succeeded", "failed", "canceled"):
            raise RuntimeError(f"job {job_id} ended before step {step}: {job['status']}")
        time.sleep(POLL_S)
    raise RuntimeError(f"job {job_id} did not reach step {step} in {FOLLOW_S} s")


def wait_for_end(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + FOLLOW_S
    job = read(client, job_id)
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = read(client, job_id)
    return job


def restart_worker(stack: Stack, snapshot_every_s: float) -> None:
    """SIGKILL the worker and start it again, with this snapshot interval."""
    stack.kill_worker(0)
    stack.settings["NEXP_SNAPSHOT_EVERY_S"] = f"{snapshot_every_s:g}"
    stack.start_worker(0)


def stored_times(stack: Stack, job_id: str) -> int:
    """How many attempts stored the job's checkpoint (worker.runner logs each)."""
    log = (stack.folder / "worker0.log").read_text(errors="replace")
    return sum(job_id in line for line in log.splitlines() if "checkpoint stored" in line)


def kill_once(stack: Stack, client: httpx.Client, image: Path, steps: int, kill_at: int,
              snapshot_every_s: float) -> dict[str, Any]:
    """One job, its worker SIGKILLed once the fit passes `kill_at`: what came of it."""
    started = time.monotonic()
    answer = client.post("/v1/jobs", files={"file": (image.name, image.read_bytes())},
                         data={"steps": str(steps)})
    answer.raise_for_status()
    job_id = answer.json()["id"]
    wait_for_step(client, job_id, kill_at, snapshot_every_s > 0)
    restart_worker(stack, snapshot_every_s)
    killed = read(client, job_id)  # the progress its last heartbeat wrote
    done = wait_for_end(client, job_id)
    at_kill = killed["progress"]["step"]
    resumed = done["resumed_from_step"] or 0
    return {"job": job_id, "status": done["status"], "attempts": done["attempts"],
            "step_at_kill": at_kill, "resumed_from_step": resumed, "redone": at_kill - resumed,
            "stored": stored_times(stack, job_id), "seconds": time.monotonic() - started}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kills": len(runs),
        "lost": sum(run["status"] != "succeeded" for run in runs),
        "stored_twice": sum(run["stored"] > 1 for run in runs),
        "mean_step_at_kill": statistics.fmean(run["step_at_kill"] for run in runs),
        "mean_redone": statistics.fmean(run["redone"] for run in runs),
        "mean_job_s": statistics.fmean(run["seconds"] for run in runs),
    }


def run(args: argparse.Namespace) -> Section:
    size = "quick" if args.quick else "full"
    steps = args.steps or STEPS[size]
    rng = random.Random(0)
    kills = 1 if args.steps else KILLS[size]
    kill_steps = [round(steps * rng.uniform(*KILL_BETWEEN)) for _ in range(kills)]
    section = Section("faults")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        stack = Stack(Path(tmp) / "service", workers=1)
        stack.settings["NEXP_HEARTBEAT_S"] = "0.2"  # the step at a kill is read from the row
        stack.start()
        try:
            image = make_inputs(Path(tmp))[0]
            warm_up(stack.url, [image])  # its pretraining, cached, is in no mode's job time
            with httpx.Client(base_url=stack.url, timeout=60) as client:
                for mode, every in MODES.items():
                    restart_worker(stack, every)
                    runs = [kill_once(stack, client, image, steps, at, every) for at in kill_steps]
                    results[mode] = {"snapshot_every_s": every, "runs": runs, **summary(runs)}
        finally:
            stack.stop()
    section.add(f"A {steps}-step fit of a 16 x 16 image, its only worker SIGKILLed (with its pool "
                f"child) once at steps {kill_steps}, in each mode; 1 torch thread, CPU: "
                f"{cpu_name()}, a machine shared with other work.\n")
    section.add(table(
        ["mode", "kills", "jobs lost", "results stored twice", "step at the kill (mean)",
         "steps redone per kill (mean)", "job time, s (mean)"],
        [[mode, r["kills"], r["lost"], r["stored_twice"], f"{r['mean_step_at_kill']:.0f}",
          f"{r['mean_redone']:.0f}", f"{r['mean_job_s']:.0f}"] for mode, r in results.items()]))
    section.data.update(modes=results, lost=sum(r["lost"] for r in results.values()),
                        config={"steps": steps, "kill_steps": kill_steps, **settings_of(stack)})
    return section
