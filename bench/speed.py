"""Speed at the paper's image configuration (128 x 128, K = 4, 365,968 parameters), side by side:
the reference's eager einsum formulation vs this project eager vs compiled, then rendering."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable

import torch

from bench.reference import ReferenceModel, reference_render, reference_step
from bench.report import Section, table
from bench.timing import Timing, interleaved, timed
from model.fit import accumulate_gradients, make_adam, make_loss_fn
from model.network import CPU_BATCH_ROWS, NeuralExperts, count_parameters
from model.presets import model_config
from model.signals.base import Batch, Signal
from model.signals.image import ImageSignal

LR = 1e-5  # the paper's rate; the rate does not change a step's cost
ROWS_SWEEP = (1024, 2048, 4096, 8192, 16384)


def our_step(model: NeuralExperts, signal: Signal, batch: Batch, compile_mode: str | None,
             rows: int, top_k: int | None = None) -> Callable[[], object]:
    """One step as model.fit runs it: micro-batched forward + backward, fused Adam; eager (None)
    or compiled ("default"). "reduce-overhead", an experiment that model.fit does not run, replays
    the compiled forward and backward as CUDA graphs (a 366k-parameter GPU step is launch-bound).
    `top_k`: sparse training, each point through its top k experts (eager only, as model.fit)."""
    if compile_mode == "reduce-overhead":
        loss_fn = torch.compile(make_loss_fn(model, signal, 0.0, False), mode=compile_mode)
    else:
        loss_fn = make_loss_fn(model, signal, 0.0, compile_mode is not None, top_k)
    optimizer = make_adam(list(model.parameters()), LR, next(model.parameters()).device)

    def step() -> None:
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last one's outputs are done
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(loss_fn, batch, rows)
        optimizer.step()

    return step


def reference_step_fn(model: ReferenceModel, batch: Batch) -> Callable[[], object]:
    """One step as the reference's training script runs it (bench/reference.py)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.999))
    return lambda: reference_step(model, optimizer, batch.coords[None].clone(), batch.target[None])


def _ratio_rows(timings: dict[str, Timing], base: str, per_call: float | None = None) -> list[list[object]]:
    rows = []
    for name, t in timings.items():
        rate = f"{per_call / t.median / 1e3:,.0f}k" if per_call else ""
        rows.append([name, f"{t.median * 1e3:.0f}", f"{t.best * 1e3:.0f}", rate,
                     f"{timings[base].median / t.median:.2f}x"])
    return rows


def _compile_seconds(step: Callable[[], object]) -> tuple[float, float]:
    """(cold, warm) seconds of a compiled step's first call: an empty inductor cache, then the
    same compile again after a dynamo reset (what a later fit in a warm service pays)."""
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            cold = timed(step) - timed(step)
            torch._dynamo.reset()
            warm = timed(step) - timed(step)
        finally:
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous
    return cold, warm


def run(args: argparse.Namespace, signal: ImageSignal) -> Section:
    section = Section("speed")
    batch = Batch(signal.grid.coords(), signal.pixels)
    n = batch.coords.shape[0]
    config = model_config("neural-experts", "image", 2, 3)
    torch.manual_seed(0)
    reference = ReferenceModel()
    ours = [NeuralExperts(config) for _ in range(2)]
    assert count_parameters(reference) == count_parameters(ours[0]) == 365_968

    eager = our_step(ours[0], signal, batch, None, CPU_BATCH_ROWS)
    compiled = our_step(ours[1], signal, batch, "default", CPU_BATCH_ROWS)
    cold, warm = _compile_seconds(compiled)
    train = interleaved(
        {"reference (eager einsum)": reference_step_fn(reference, batch), "ours eager": eager,
         "ours compiled": compiled},
        args.repeats,
    )
    section.add(f"### Training step, {n:,} points, {torch.get_num_threads()} threads\n")
    section.add(table(["", "median ms", "best ms", "", "vs reference"],
                      _ratio_rows(train, "reference (eager einsum)")))
    section.add(f"torch.compile of the step: {cold:.1f} s with an empty inductor cache, "
                f"{warm:.1f} s with a warm one.\n")

    model = ours[0].eval()
    render = interleaved(
        {
            "reference, one batch (its test script)": lambda: reference_render(reference, batch.coords, n),
            f"reference, {CPU_BATCH_ROWS} chunks": lambda: reference_render(
                reference, batch.coords, CPU_BATCH_ROWS),
            "ours dense (all experts)": lambda: model.predict_dense(batch.coords),
            "ours routed (argmax expert only)": lambda: model.predict(batch.coords),
        },
        args.repeats,
    )
    dense, dense_ids = model.predict_dense(batch.coords)
    routed, routed_ids = model.predict(batch.coords)
    section.add(f"### Rendering {n:,} points\n")
    section.add(table(["", "median ms", "best ms", "points/s", "vs reference (one batch)"],
                      _ratio_rows(render, "reference, one batch (its test script)", n)))
    ratio = render["ours dense (all experts)"].median / render["ours routed (argmax expert only)"].median
    section.add(f"Routed vs dense: {ratio:.2f}x (arithmetic limit at K = 4: 1.69x). Same expert ids: "
                f"{torch.equal(dense_ids, routed_ids)}; max |routed - dense| = "
                f"{float((dense - routed).abs().max()):.1e}.\n")

    sweep = _rows_sweep(model, batch, signal, args.repeats)
    section.add("### Rows per GEMM run (`CPU_BATCH_ROWS`)\n")
    section.add(table(["rows", "routed render points/s", "eager train step ms"], sweep))
    section.data = {
        "points": n, "threads": torch.get_num_threads(),
        "train_s": {k: t.seconds for k, t in train.items()},
        "render_s": {k: t.seconds for k, t in render.items()},
        "compile_s": {"cold": cold, "warm": warm},
        "rows_sweep": sweep,
    }
    return section


def _rows_sweep(model: NeuralExperts, batch: Batch, signal: Signal, repeats: int) -> list[list[object]]:
    grid = batch.coords
    renders = interleaved(
        {str(rows): (lambda rows=rows: model.predict(grid, chunk=rows)) for rows in ROWS_SWEEP}, repeats
    )
    trainer = NeuralExperts(model.config)
    steps = interleaved(
        {str(rows): our_step(trainer, signal, batch, None, rows) for rows in ROWS_SWEEP}, repeats
    )
    return [
        [rows, f"{grid.shape[0] / renders[str(rows)].median / 1e3:,.0f}k",
         f"{steps[str(rows)].median * 1e3:.0f}"]
        for rows in ROWS_SWEEP
    ]
