"""Run every engine's side-by-side benchmark that this environment can run,
then write one JSON file, one table and one PNG chart.

    python -m benchmarks [--quick] [--engines concurrent,dask,dragon,radical,telemetry] [--out DIR]

Each engine runs in a child process of its own (Dragon's under the ``dragon``
launcher), so one engine's runtime never disturbs another's figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import children
from benchmarks.common import SCRATCH_VARIABLE, fmt

ROOT = Path(__file__).resolve().parent.parent
ENGINES = {  # engine -> plugin package that must be importable
    "concurrent": "rhapsody_concurrent",
    "dask": "rhapsody_dask",
    "dragon": "rhapsody_dragon",
    "radical": "rhapsody_radical",
    "telemetry": "rhapsody_telemetry",  # telemetry off vs on (concurrent and Dask), bench_telemetry.py
}


def _command(engine: str, json_out: Path, passthrough: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", f"benchmarks.bench_{engine}", "--json", str(json_out), *passthrough]
    if engine == "dragon":
        launcher = shutil.which("dragon", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
        if launcher is None:
            raise FileNotFoundError("the dragon launcher is not on PATH")
        cmd = [launcher, *cmd]
    return cmd


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'engine':<11}{'workload':<16}{'variant':<13}{'N':>8}{'median s':>10}{'tasks/s':>11}{'us/task':>12}{'vs raw':>8}"]
    raw = {(r["engine"], r["workload"]): r for r in rows if r["variant"] == "raw" and not r.get("error")}
    skipped: dict[tuple[str, str], set[str]] = {}
    for r in sorted(rows, key=lambda r: (r["engine"], r["workload"], r["variant"])):
        if r.get("skipped"):
            skipped.setdefault((r["variant"], r["skipped"]), set()).add(r["engine"])
            continue
        if r.get("error"):
            lines.append(f"{r['engine']:<11}{r['workload']:<16}{r['variant']:<13}{r['n']:>8}  FAILED: {r['error'][:80]}")
            continue
        base = raw.get((r["engine"], r["workload"]))
        ratio = f"{r['median_s'] / base['median_s']:>8.2f}" if base and r["variant"] != "raw" else f"{'':>8}"
        lines.append(
            f"{r['engine']:<11}{r['workload']:<16}{r['variant']:<13}{r['n']:>8}{r['median_s']:>10.3f}{fmt(r['tasks_per_s'], 11)}{fmt(r['per_task_us'], 12)}{ratio}"
        )
    for (variant, why), engines in sorted(skipped.items()):
        lines.append(f"{variant} not run ({', '.join(sorted(engines))}): {why}")
    return "\n".join(lines)


def _chart(rows: list[dict[str, Any]], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)"
    variants = ["raw", "rhapsody", "rhapsody-py"]
    good = [r for r in rows if not r.get("error") and not r.get("skipped") and r["variant"] in variants]
    engines = sorted({r["engine"] for r in good})
    if not engines:
        return "no successful results: no chart"
    colors = {"raw": "#888888", "rhapsody": "#1f77b4", "rhapsody-py": "#ff7f0e"}
    widest = max(len({r["workload"] for r in good if r["engine"] == e}) for e in engines)
    # one panel per engine: rates differ by orders of magnitude between engines
    fig, axes = plt.subplots(len(engines), 1, figsize=(max(7, widest * 1.3), 2.8 * len(engines)), squeeze=False)
    width = 0.27
    for ax, engine in zip(axes[:, 0], engines, strict=True):
        workloads = sorted({r["workload"] for r in good if r["engine"] == engine})
        for i, variant in enumerate(variants):
            by_workload = {r["workload"]: r["tasks_per_s"] for r in good if r["engine"] == engine and r["variant"] == variant}
            xs = [x + (i - 1) * width for x, w in enumerate(workloads) if w in by_workload]
            if xs:
                ax.bar(xs, [by_workload[w] for w in workloads if w in by_workload], width, label=variant, color=colors[variant])
        ax.set_xticks(range(len(workloads)), workloads, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("tasks/s (log)")
        ax.set_title(engine, fontsize=10, loc="left")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("RHAPSODY vs the raw engine (and rhapsody-py), interleaved in one run; higher is better")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


def _run_engines(
    args: argparse.Namespace, passthrough: list[str], json_out: Path, out: Path, env: dict[str, str], mark: str, status: dict[str, str]
) -> None:
    """Each engine's benchmark in a child; whatever happens (timeout, error,
    SIGTERM/SIGINT of this command), its processes are stopped before the next."""
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        if engine not in ENGINES:
            status[engine] = f"unknown engine; known: {', '.join(ENGINES)}"
            continue
        if importlib.util.find_spec(ENGINES[engine]) is None:
            status[engine] = f"not run: {ENGINES[engine]} is not installed in this environment"
            continue
        print(f"--- {engine}", flush=True)
        shm_before = children.shm_entries()
        scratch = out / f"scratch-{engine}"
        scratch.mkdir(exist_ok=True)
        try:
            # Each engine in a session of its own. Not Dragon's: its launcher calls
            # setsid() itself and hangs silently when it is already a session leader;
            # the mark in its environment finds what it starts (`children`).
            proc = subprocess.Popen(
                _command(engine, json_out, passthrough),
                cwd=out,
                env={**env, SCRATCH_VARIABLE: str(scratch.resolve())},
                start_new_session=engine != "dragon",
                preexec_fn=children.die_with_parent,
            )
        except OSError as exc:
            status[engine] = f"not run: {exc}"
            shutil.rmtree(scratch, ignore_errors=True)
            continue
        try:
            code = proc.wait(timeout=args.timeout)
            status[engine] = "ok" if code == 0 else f"exited {code}"
        except subprocess.TimeoutExpired:
            status[engine] = f"killed after {args.timeout:g} s (--timeout)"
        finally:
            children.stop(proc, mark, shm_before)
            shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every workload at small N: checks the code, not speed")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma list (default: all installed)")
    parser.add_argument(
        "--out", type=Path, default=None, help="results directory (default: $RHAPSODY_WORK_DIR or ./rhapsody-work, /bench-<time>)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per engine")
    args, passthrough = parser.parse_known_args()
    if args.quick:
        passthrough.append("--quick")
    base = Path(os.environ.get("RHAPSODY_WORK_DIR", "rhapsody-work"))
    # absolute: each engine's child runs inside it and writes its rows to results.jsonl there
    out = (args.out or base / time.strftime("bench-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    json_out = out / "results.jsonl"
    status: dict[str, str] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # small Dragon shared-memory segments unless told otherwise: the defaults reserve ~8 GiB of /dev/shm
    env.setdefault("DRAGON_DEFAULT_SEG_SZ", "268435456")
    env.setdefault("DRAGON_INF_SEG_SZ", "134217728")
    mark = children.take_charge()
    env[children.MARK_VARIABLE] = mark
    try:
        _run_engines(args, passthrough, json_out, out, env, mark, status)
    except (KeyboardInterrupt, children.Terminated) as exc:
        print(f"\nstopped ({exc or 'interrupted'}); the engines' processes were stopped", file=sys.stderr, flush=True)
        return 130 if isinstance(exc, KeyboardInterrupt) else 128 + exc.signum
    rows = [json.loads(line) for line in json_out.read_text().splitlines()] if json_out.exists() else []
    (out / "results.json").write_text(json.dumps({"status": status, "results": rows}, indent=1))
    table = _table(rows)
    (out / "results.txt").write_text(table + "\n")
    print("\n" + table)
    print("\n" + "\n".join(f"{e}: {s}" for e, s in status.items()))
    print(_chart(rows, out / "tasks_per_s.png"))
    print(f"results: {out}")
    return 0 if all(s == "ok" or s.startswith("not run: rhapsody_") for s in status.values()) and rows else 1


if __name__ == "__main__":
    sys.exit(main())
