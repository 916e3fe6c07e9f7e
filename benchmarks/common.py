"""Timing helpers shared by every engine's benchmark module.

Each engine module (``benchmarks/bench_<engine>.py``) measures pairs of
variants of one workload (``raw`` = the engine's own API, ``rhapsody`` = the same
work through a RHAPSODY Session) interleaved A/B/A/B in one process, and
records them with `Recorder`. Output: a table on stdout and JSON lines that
``python -m benchmarks`` merges.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs


@attrs.define
class Result:
    engine: str
    workload: str
    variant: str  # "raw", "rhapsody", "rhapsody-py"
    n: int
    seconds: list[float] = attrs.field(factory=list)
    error: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)
    skipped: str | None = None  # why this variant was deliberately not run (not a failure)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def spread(self) -> float:
        return (max(self.seconds) - min(self.seconds)) if len(self.seconds) > 1 else 0.0

    @property
    def rate(self) -> float:
        return self.n / self.median if self.seconds and self.median > 0 else float("nan")

    @property
    def per_task_us(self) -> float:
        return self.median / self.n * 1e6 if self.seconds else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "workload": self.workload,
            "variant": self.variant,
            "n": self.n,
            "seconds": self.seconds,
            "median_s": self.median,
            "spread_s": self.spread,
            "tasks_per_s": self.rate,
            "per_task_us": self.per_task_us,
            "error": self.error,
            "skipped": self.skipped,
            **self.extra,
        }


def parse_args(description: str, default_n: dict[str, int], quick_n: dict[str, int]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small N, one round unless --repeats: checks the code runs, not speed")
    parser.add_argument("--repeats", type=int, default=None, help="A/B rounds per workload (default 3; 1 with --quick)")
    parser.add_argument("--json", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--workloads", default="", help="comma list to run (default: all)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each workload's timed rounds, run its rhapsody variant once more under cProfile and print where the time went",
    )
    parser.add_argument(
        "--task-deadline",
        type=float,
        default=None,
        help="seconds one batch of RHAPSODY tasks may take before the variant is reported failed with its tasks' states (default 1800; 300 with --quick)",
    )
    for name, n in default_n.items():
        parser.add_argument(f"--n-{name.replace('_', '-')}", type=int, default=None, dest=f"n_{name}", help=f"N for {name} (default {n})")
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    for name in default_n:
        if getattr(args, f"n_{name}") is None:
            setattr(args, f"n_{name}", (quick_n if args.quick else default_n)[name])
    args.selected = {w for w in args.workloads.split(",") if w}
    global _task_deadline  # one setting for the whole benchmark run
    _task_deadline = args.task_deadline or (300.0 if args.quick else 1800.0)
    return args


_task_deadline = 1800.0


async def wait_all(session: Any, tasks: list[Any]) -> None:
    """``session.wait_tasks(tasks)`` with the run's ``--task-deadline``: a task
    that never ends is a finding to report, not a reason for the benchmark to
    hang. Raises naming how many tasks are in which state, and a few stuck ones."""
    try:
        await session.wait_tasks(tasks, timeout=_task_deadline)
    except TimeoutError:
        states = collections.Counter(str(t.state) for t in tasks)
        stuck = [f"{t.uid} {t.state}" for t in tasks if not t.state.is_terminal][:3]
        raise RuntimeError(
            f"{sum(states.values())} tasks had not all ended after {_task_deadline:g} s: {dict(states)}; e.g. {stuck}"
        ) from None


#: a folder ``python -m benchmarks`` owns and removes once the engine's run is over, however it ended
SCRATCH_VARIABLE = "RHAPSODY_BENCH_SCRATCH"


def scratch_dir(prefix: str) -> str:
    """A new folder for one benchmark's files: under the aggregator's scratch
    folder when run by it (a run killed before its ``finally`` leaves nothing
    in /tmp), else in the system's temp folder."""
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get(SCRATCH_VARIABLE) or None)


def fmt(value: float, width: int) -> str:
    """A rate or a per-task time readable at a glance across six orders of magnitude."""
    if value != value:  # NaN
        return f"{'-':>{width}}"
    if value >= 1000:
        return f"{value:>{width},.0f}"
    return f"{value:>{width}.{1 if value >= 10 else 3}f}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


@attrs.frozen
class Elapsed:
    """Return this from a variant measured elsewhere (e.g. in another process):
    `Recorder.ab` records ``seconds`` instead of its own wall clock around the call."""

    seconds: float
    extra: dict[str, Any] = attrs.field(factory=dict)


class Recorder:
    """Collects results for one engine and prints / writes them."""

    def __init__(self, engine: str, args: argparse.Namespace) -> None:
        self.engine, self.args = engine, args
        self.results: dict[tuple[str, str], Result] = {}
        self.profiles: list[str] = []

    def wanted(self, workload: str) -> bool:
        return not self.args.selected or workload in self.args.selected

    def result(self, workload: str, variant: str, n: int) -> Result:
        key = (workload, variant)
        if key not in self.results:
            self.results[key] = Result(self.engine, workload, variant, n)
        return self.results[key]

    async def ab(self, workload: str, n: int, variants: dict[str, Callable[[int], Awaitable[Any]]]) -> None:
        """Run each variant ``repeats`` times, interleaved; a failing variant is
        recorded with its error and dropped from later rounds."""
        for _ in range(self.args.repeats):
            for variant, fn in variants.items():
                await self.once(workload, variant, n, fn)
        if getattr(self.args, "profile", False) and "rhapsody" in variants:
            await self.profile(workload, n, variants["rhapsody"])

    async def once(self, workload: str, variant: str, n: int, fn: Callable[[int], Awaitable[Any]]) -> None:
        """One timed round of ``variant``, unless it already failed or was skipped;
        a failure is recorded with its error (the variant runs no further rounds)."""
        res = self.result(workload, variant, n)
        if res.error or res.skipped:
            return
        t0 = time.perf_counter()
        try:
            value = await fn(n)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
            res.error = f"{type(exc).__name__}: {exc}"[:300]
            print(f"  {workload}/{variant} FAILED: {res.error}", file=sys.stderr, flush=True)
            return
        seconds = time.perf_counter() - t0
        if isinstance(value, Elapsed):
            seconds = value.seconds
            res.extra.update(value.extra)
        res.seconds.append(seconds)
        print(f"  {workload:<16}{variant:<13}{n:>8}{seconds:>10.3f} s", file=sys.stderr, flush=True)

    async def profile(self, workload: str, n: int, fn: Callable[[int], Awaitable[Any]]) -> None:
        """One untimed extra run under cProfile (the event loop's thread only:
        pool threads are not seen), its top functions by own time printed."""
        profiler = cProfile.Profile()
        profiler.enable()
        try:
            await fn(n)
        finally:
            profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
        out.write(f"-- profile: {self.engine}/{workload}/rhapsody, N={n} (event-loop thread) --\n")
        stats.print_stats(20)
        self.profiles.append(out.getvalue())
        print(out.getvalue(), file=sys.stderr, flush=True)

    def record(self, workload: str, variant: str, n: int, seconds: float, **extra: Any) -> None:
        res = self.result(workload, variant, n)
        res.seconds.append(seconds)
        res.extra.update(extra)

    def fail(self, workload: str, variant: str, n: int, error: str) -> None:
        self.result(workload, variant, n).error = error[:300]

    def skip(self, workload: str, variant: str, n: int, reason: str) -> None:
        """Record that ``variant`` was deliberately not run (shown as "not run", not FAILED)."""
        self.result(workload, variant, n).skipped = reason[:300]

    def finish(self) -> None:
        rows = sorted(self.results.values(), key=lambda r: (r.workload, r.variant))
        print(f"\n== {self.engine} ==")
        print(f"{'workload':<22}{'variant':<13}{'N':>8}{'median s':>11}{'spread s':>10}{'tasks/s':>11}{'us/task':>12}{'vs raw':>8}")
        for r in rows:
            if r.skipped:
                print(f"{r.workload:<22}{r.variant:<13}{r.n:>8}  not run: {r.skipped}")
                continue
            if r.error:
                print(f"{r.workload:<22}{r.variant:<13}{r.n:>8}  FAILED: {r.error}")
                continue
            raw = self.results.get((r.workload, "raw"))
            ratio = r.median / raw.median if raw and raw.seconds and r.variant != "raw" else None
            ratio_s = f"{ratio:>8.2f}" if ratio is not None else f"{'':>8}"
            extra = " ".join(f"{k}={v}" for k, v in r.extra.items())
            print(
                f"{r.workload:<22}{r.variant:<13}{r.n:>8}{r.median:>11.3f}{r.spread:>10.3f}{fmt(r.rate, 11)}{fmt(r.per_task_us, 12)}{ratio_s}  {extra}"
            )
        sys.stdout.flush()
        if self.args.json:
            self.args.json.parent.mkdir(parents=True, exist_ok=True)
            with open(self.args.json, "a") as fh:
                for r in rows:
                    fh.write(json.dumps({**r.as_json(), "pid": os.getpid()}) + "\n")
