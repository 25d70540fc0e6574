"""The service under many small jobs: `python -m bench soak` and `python -m bench load`.

soak: `--clients` threads, each in a loop for `--duration` seconds (`--quick`: 45 s): upload a
small job (a 16 x 16 image or a 0.1 s clip, a few steps), poll it to its end, render its
reconstruction. Halfway through, one of the two workers is SIGKILLed and started again; the API
requeues its job. Then every job must end within the drain timeout: one that has not is lost.

load: `--clients` x 4 uploads at once, then as many renders at once of the finished jobs.

Both print jobs submitted / succeeded / failed / lost and latency percentiles (submit, poll,
render, and a job's whole time from upload to its end), and save bench/results/<section>.json.
`python -m bench` exits non-zero when a job was lost.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import soundfile as sf
from PIL import Image

from bench.data import bench_data
from bench.report import Section, table
from bench.stack import Stack

STEPS = 20  # a job of a second or two: the service's overhead, not the fit, is under test
POLL_S = 0.5
REQUEST_TIMEOUT_S = 120  # a render waits for a render thread on a busy machine
DRAIN_S = 240  # after the clients stop: time for the queue to empty and requeued jobs to rerun
RESTART_AFTER_S = 5  # the killed worker is down this long
QUICK_S = 45
FINAL = frozenset({"succeeded", "failed", "canceled"})
LATENCIES = ("submit", "poll", "render", "job")


@dataclass
class Tally:
    """What the clients saw, from several threads."""

    jobs: dict[str, str] = field(default_factory=dict)
    """Job id -> the status last seen."""
    seconds: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LATENCIES})
    unexpected: Counter[str] = field(default_factory=Counter)
    """Answers no client should get (by request and status or error), and how often."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def took(self, what: str, seconds: float) -> None:
        with self.lock:
            self.seconds[what].append(seconds)

    def saw(self, job: dict[str, Any]) -> None:
        with self.lock:
            self.jobs[job["id"]] = job["status"]

    def odd(self, what: str) -> None:
        with self.lock:
            self.unexpected[what] += 1


def timed(tally: Tally, what: str, call: Callable[[], httpx.Response]) -> httpx.Response | None:
    """The answer of a request, its latency counted; None (and counted odd) on any error."""
    start = time.perf_counter()
    try:
        response = call()
    except httpx.HTTPError as e:
        tally.odd(f"{what}: {type(e).__name__}")
        return None
    tally.took(what, time.perf_counter() - start)
    if response.status_code >= 400:
        code = response.json().get("code", "?") if response.headers.get(
            "content-type", "").endswith("json") else "?"
        tally.odd(f"{what}: {response.status_code} {code}")
        return None
    return response


def submit(client: httpx.Client, path: Path, tally: Tally) -> dict[str, Any] | None:
    with path.open("rb") as f:
        body = f.read()
    answer = timed(tally, "submit", lambda: client.post(
        "/v1/jobs", files={"file": (path.name, body)}, data={"steps": str(STEPS)}))
    if answer is None:
        return None
    job: dict[str, Any] = answer.json()
    tally.saw(job)
    return job


def follow(client: httpx.Client, job: dict[str, Any], tally: Tally,
           deadline: float) -> dict[str, Any]:
    """Poll the job until it ends or the deadline passes; the job as last seen."""
    started = time.perf_counter()
    url = job["urls"]["self"]
    while job["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(POLL_S)
        answer = timed(tally, "poll", lambda: client.get(url))
        if answer is not None:
            job = answer.json()
            tally.saw(job)
    if job["status"] in FINAL:
        tally.took("job", time.perf_counter() - started)
    return job


def render(client: httpx.Client, job: dict[str, Any], tally: Tally, size: int = 32) -> None:
    """The reconstruction, at a size of its own (the API caches renders it has made)."""
    query = {"width": size, "height": size} if job["kind"] == "image" else {"sample_rate": 8000 + size}
    timed(tally, "render", lambda: client.get(job["urls"]["reconstruction"], params=query))


def client_loop(url: str, inputs: list[Path], tally: Tally, index: int, stop_at: float) -> None:
    """Upload, follow, render, again, until `stop_at`; the last job is followed to its end."""
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        turn = index
        while time.monotonic() < stop_at:
            job = submit(client, inputs[turn % len(inputs)], tally)
            turn += 1
            if job is None:
                time.sleep(1)  # the service refused: back off a little
                continue
            job = follow(client, job, tally, stop_at + DRAIN_S)
            if job["status"] == "succeeded":
                render(client, job, tally, 16 + turn % 16)


def make_inputs(folder: Path) -> list[Path]:
    """A 16 x 16 crop of the paper's ablation image and 0.1 s of its Bach recording."""
    image = folder / "kodim19-16.png"
    with Image.open(bench_data("images", "kodak", "kodim19.png")) as source:
        source.resize((source.width // 8, source.height // 8)).crop((20, 30, 36, 46)).save(image)
    clip = folder / "bach-0.1s.wav"
    samples, rate = sf.read(bench_data("audio", "gt_bach.wav"), dtype="float32")
    sf.write(clip, samples[2 * rate : 2 * rate + rate // 10], rate, subtype="PCM_16")
    return [image, clip]


def warm_up(url: str, inputs: list[Path]) -> None:
    """One job per input, to its end: each shape's manager pretraining happens once (and is
    cached), and would otherwise dominate the first jobs' times."""
    tally = Tally()
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        jobs = [submit(client, path, tally) for path in inputs]
        for job in jobs:
            if job is None or follow(client, job, tally, time.monotonic() + DRAIN_S)["status"] != "succeeded":
                raise RuntimeError(f"a warm-up job did not succeed: {tally.jobs}, {tally.unexpected}")


def settle(url: str, tally: Tally, deadline: float) -> Counter[str]:
    """Every job's final status, read once more after the clients stopped; waits (up to the
    deadline) for jobs still queued or running. A job not final by then counts as lost."""
    ends: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for job_id in list(tally.jobs):
            job = client.get(f"/v1/jobs/{job_id}").json()
            job = follow(client, job, Tally(), deadline)
            ends[job["status"] if job["status"] in FINAL else "lost"] += 1
            ends["redelivered"] += job["attempts"] > 1
            if job["status"] == "failed":
                errors[job["error"]["code"]] += 1
    ends.update({f"failed: {code}": n for code, n in errors.items()})
    return ends


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was measured."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


def report(section: Section, tally: Tally, ends: Counter[str], timeline: dict[str, float]) -> None:
    counts = {"submitted": len(tally.jobs), "succeeded": ends["succeeded"],
              "failed": ends["failed"], "canceled": ends["canceled"], "lost": ends["lost"],
              "redelivered": ends["redelivered"]}
    section.add(table(list(counts), [list(counts.values())]))
    failures = {k: v for k, v in ends.items() if k.startswith("failed: ")}
    if failures:
        section.add(f"Failures by code: {failures}\n")
    rows, latency = [], {}
    for what in LATENCIES:
        values = tally.seconds[what]
        if values:
            stats = {f"p{q}": percentile(values, q) * 1e3 for q in (50, 95, 99)}
            stats["max"] = max(values) * 1e3
            latency[what] = {"n": len(values), **stats}
            rows.append([what, len(values), *(f"{v:.0f}" for v in stats.values())])
    section.add(table(["latency (ms)", "n", "p50", "p95", "p99", "max"], rows))
    if tally.unexpected:
        section.add(f"Unexpected answers: {dict(tally.unexpected)}\n")
    section.data.update(counts, failures=failures, latency_ms=latency,
                        unexpected=dict(tally.unexpected), timeline_s=timeline)


def settings_of(stack: Stack) -> dict[str, str]:
    """The service's settings worth keeping with the results (not this run's folder or ports)."""
    return {k: v for k, v in stack.settings.items()
            if k not in ("NEXP_DATA_DIR", "NEXP_BROKER_URL", "NEXP_QUEUE")}


@contextmanager
def warm_stack(prefix: str) -> Iterator[tuple[Stack, list[Path]]]:
    """A private service with its inputs, each kind fitted once (warm_up), stopped on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        stack = Stack(Path(tmp) / "service")
        stack.start()
        try:
            inputs = make_inputs(Path(tmp))
            warm_up(stack.url, inputs)
            yield stack, inputs
        finally:
            stack.stop()


def run_soak(args: argparse.Namespace) -> Section:
    duration = QUICK_S if args.quick else args.duration
    section = Section("soak")
    with warm_stack("bench-soak-") as (stack, inputs):
        tally = Tally()
        began = time.monotonic()
        stop_at = began + duration
        clients = [threading.Thread(target=client_loop, daemon=True,
                                    args=(stack.url, inputs, tally, i, stop_at))
                   for i in range(args.clients)]
        for thread in clients:
            thread.start()
        time.sleep(duration / 2)
        stack.kill_worker(1)
        killed = time.monotonic() - began
        time.sleep(RESTART_AFTER_S)
        stack.start_worker(1)
        restarted = time.monotonic() - began
        for thread in clients:
            thread.join()
        ends = settle(stack.url, tally, time.monotonic() + DRAIN_S)
        timeline = {"duration": duration, "worker_killed_at": killed,
                    "worker_restarted_at": restarted, "settled_at": time.monotonic() - began}
    section.add(f"{args.clients} clients for {duration} s against the API and {stack.workers} "
                f"workers; worker 1 SIGKILLed at {killed:.0f} s and restarted at "
                f"{restarted:.0f} s.\n")
    report(section, tally, ends, timeline)
    section.data["config"] = {"clients": args.clients, "workers": stack.workers, "steps": STEPS,
                              **settings_of(stack)}
    return section


def run_load(args: argparse.Namespace) -> Section:
    count = args.clients * 4
    section = Section("load")
    with warm_stack("bench-load-") as (stack, inputs):
        tally = Tally()
        began = time.monotonic()
        with httpx.Client(base_url=stack.url, timeout=REQUEST_TIMEOUT_S,
                          limits=httpx.Limits(max_connections=count)) as client, \
                ThreadPoolExecutor(count) as pool:
            jobs = [j for j in pool.map(lambda i: submit(client, inputs[i % 2], tally),
                                        range(count)) if j is not None]
            uploaded = time.monotonic() - began
            deadline = time.monotonic() + DRAIN_S
            done = list(pool.map(lambda j: follow(client, j, tally, deadline), jobs))
            ends = settle(stack.url, tally, deadline)
            settled = time.monotonic() - began
            succeeded = [j for j in done if j["status"] == "succeeded"]
            if succeeded:
                list(pool.map(lambda i: render(client, succeeded[i % len(succeeded)], tally,
                                               16 + i), range(count)))
        timeline = {"uploaded_at": uploaded, "settled_at": settled,
                    "rendered_at": time.monotonic() - began}
    section.add(f"{count} uploads at once, then {count} renders at once, against the API and "
                f"{stack.workers} workers.\n")
    report(section, tally, ends, timeline)
    section.data["config"] = {"uploads": count, "renders": count, "workers": stack.workers,
                              "steps": STEPS, **settings_of(stack)}
    return section
