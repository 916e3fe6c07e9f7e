"""The report page: a summary table and the charts of one run."""

from __future__ import annotations

import datetime
import heapq
from collections.abc import Callable
from html import escape

from rhapsody_telemetry.report import svg
from rhapsody_telemetry.report.load import Run, TaskRow

MAX_TIMELINE_TASKS = 3000  # per backend and worker: more bars than this only make the page slow
MAX_WORKER_GROUPS = 8  # per backend, before workers of one task each share a group

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:960px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.note{color:#666;font-size:12px}
"""


def render(run: Run, source: str) -> str:
    t0 = run.t0
    sections = [
        ("Task timeline per backend and worker", _timeline(run, t0)),
        ("Tasks running over time", _running(run, t0)),
        ("Tasks by final state", _states(run)),
        (
            "Queue wait (submission to start)",
            svg.histogram(_by_backend(run, lambda t: t.started - t.submitted if t.started is not None else None), "seconds"),
        ),
        (
            "Run time (start to end)",
            svg.histogram(_by_backend(run, lambda t: t.ended - t.started if t.started is not None else None), "seconds"),
        ),
        ("CPU utilisation per node", _resource(run, t0, "cpu")),
        ("Memory utilisation per node", _resource(run, t0, "memory")),
    ]
    if any(s.gpu_percent is not None for s in run.samples):
        sections.append(("GPU utilisation", _resource(run, t0, "gpu_percent")))
    body = "".join(f"<h2>{escape(title)}</h2>{chart}" for title, chart in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>RHAPSODY run {escape(run.session_id)}</title>"
        f"<style>{STYLE}</style></head><body><h1>RHAPSODY run {escape(run.session_id)}</h1>{_summary(run, source)}{body}</body></html>"
    )


def _summary(run: Run, source: str) -> str:
    started = datetime.datetime.fromtimestamp(run.t0, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    state = "ended" if run.complete else "still running, or stopped without a last flush"
    rows = []
    for backend in sorted({t.backend for t in run.tasks}):
        mine = [t for t in run.tasks if t.backend == backend]
        run_times = sorted(t.ended - t.started for t in mine if t.started is not None)
        waits = sorted(t.started - t.submitted for t in mine if t.started is not None)
        counts = {s: sum(1 for t in mine if t.status == s) for s in ("completed", "failed", "canceled")}
        rows.append(
            f"<tr><td>{escape(backend)}</td><td>{len(mine)}</td><td>{counts['completed']}</td><td>{counts['failed']}</td><td>{counts['canceled']}</td>"
            f"<td>{_seconds(svg.percentile(waits, 0.5))}</td><td>{_seconds(svg.percentile(waits, 0.95))}</td>"
            f"<td>{_seconds(svg.percentile(run_times, 0.5))}</td><td>{_seconds(svg.percentile(run_times, 0.95))}</td></tr>"
        )
    table = (
        "<table><tr><th>backend</th><th>tasks</th><th>completed</th><th>failed</th><th>canceled</th>"
        "<th>wait p50</th><th>wait p95</th><th>run p50</th><th>run p95</th></tr>" + "".join(rows) + "</table>"
    )
    nodes = len({(s.backend, s.node) for s in run.samples})
    return (
        f"<p>Started {started}; {run.t1 - run.t0:.1f} s covered; {state}. {len(run.tasks)} tasks, "
        f"{len(run.samples)} resource samples of {nodes} nodes/workers.</p>{table}"
        f"<p class='note'>From {escape(source)}. Times in seconds from the start of the run. "
        "Timeline: one group of rows per backend and worker (where the engine said the task ran); within a group, "
        "each task is drawn in the first row free when it started.</p>"
    )


def _seconds(value: float) -> str:
    return "-" if value != value else f"{value:.3g} s"  # NaN: no task of that kind


def _by_backend(run: Run, measure: Callable[[TaskRow], float | None]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for task in run.tasks:
        value = measure(task)
        if value is not None:
            out.setdefault(task.backend, []).append(max(float(value), 0.0))
    return out


def _timeline(run: Run, t0: float) -> str:
    """One group of rows per backend and worker (where the engine said each
    task ran; tasks it said nothing about share their backend's group)."""
    lanes: list[tuple[str, list[tuple[float, float, str, str]]]] = []
    notes = []
    for name, mine in _worker_groups(run.tasks):
        mine.sort(key=lambda t: t.started if t.started is not None else t.ended)
        if len(mine) > MAX_TIMELINE_TASKS:
            notes.append(f"{name}: {MAX_TIMELINE_TASKS} of {len(mine)} tasks drawn (evenly spread)")
            step = len(mine) / MAX_TIMELINE_TASKS
            mine = [mine[int(i * step)] for i in range(MAX_TIMELINE_TASKS)]
        lanes.extend((name if i == 0 else "", bars) for i, bars in enumerate(_slots(mine, t0)))
    note = "".join(f"<p class='note'>{escape(n)}</p>" for n in notes)
    return note + svg.timeline(lanes, run.t1 - t0, "seconds since start")


def _worker_groups(tasks: list[TaskRow]) -> list[tuple[str, list[TaskRow]]]:
    """(label, tasks) per backend and worker, in name order. A backend with
    more than `MAX_WORKER_GROUPS` workers gets those that ran one task each
    (a process per task: an executable's, a Dragon V1 process) as one group."""
    groups: dict[tuple[str, str], list[TaskRow]] = {}
    for task in tasks:
        groups.setdefault((task.backend, task.worker or ""), []).append(task)
    out: list[tuple[str, list[TaskRow]]] = []
    for backend in sorted({b for b, _ in groups}):
        mine = {w: ts for (b, w), ts in groups.items() if b == backend}
        single = [w for w, ts in mine.items() if w and len(ts) == 1] if len(mine) > MAX_WORKER_GROUPS else []
        for worker in sorted(set(mine) - set(single)):
            out.append((f"{backend} {worker}" if worker else backend, mine[worker]))
        if single:
            out.append((f"{backend}: {len(single)} workers of one task each", [mine[w][0] for w in single]))
    return out


def _slots(tasks: list[TaskRow], t0: float) -> list[list[tuple[float, float, str, str]]]:
    """Greedy packing: each task goes to the lowest-numbered slot free at its start."""
    free: list[tuple[float, int]] = []  # (free from, slot) of busy slots
    idle: list[int] = []
    slots: list[list[tuple[float, float, str, str]]] = []
    for task in tasks:
        start = task.started if task.started is not None else task.ended
        while free and free[0][0] <= start:
            heapq.heappush(idle, heapq.heappop(free)[1])
        slot = heapq.heappop(idle) if idle else len(slots)
        if slot == len(slots):
            slots.append([])
        color = svg.STATUS_COLORS.get(task.status, "#555")
        tip = f"{task.uid} {task.status}" + (f" ({task.error_type})" if task.error_type else "") + f", {task.ended - start:.3g} s"
        slots[slot].append((start - t0, task.ended - t0, color, tip))
        heapq.heappush(free, (task.ended, slot))
    return slots


def _running(run: Run, t0: float) -> str:
    series: dict[str, list[tuple[float, float]]] = {}
    for backend in sorted({t.backend for t in run.tasks}):
        changes = sorted(
            [(t.started - t0, 1) for t in run.tasks if t.backend == backend and t.started is not None]
            + [(t.ended - t0, -1) for t in run.tasks if t.backend == backend and t.started is not None]
        )
        level, points = 0, [(0.0, 0.0)]
        for at, delta in changes:
            level += delta
            points.append((at, float(level)))
        series[backend] = points
    return svg.line_chart(series, "seconds since start", "tasks running", step=True)


def _states(run: Run) -> str:
    groups: dict[str, dict[str, int]] = {}
    for task in run.tasks:
        counts = groups.setdefault(task.backend, {})
        counts[task.status] = counts.get(task.status, 0) + 1
    colors = {k: v for k, v in svg.STATUS_COLORS.items() if k != "waiting"}
    return svg.bar_chart(groups, "tasks", colors)


def _resource(run: Run, t0: float, field: str) -> str:
    series: dict[str, list[tuple[float, float]]] = {}
    for sample in run.samples:
        value = getattr(sample, field)
        if value is None or (field != "gpu_percent" and sample.gpu is not None):
            continue
        name = f"{sample.backend}/{sample.node}" + (f"/gpu{sample.gpu}" if sample.gpu is not None else "")
        series.setdefault(name, []).append((sample.time - t0, float(value)))
    return svg.line_chart(series, "seconds since start", "percent", y_max=100.0)
