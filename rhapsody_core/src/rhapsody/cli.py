"""``rhapsody`` command line: ``rhapsody backends``, ``rhapsody journal run.db``,
``rhapsody report FILE``, ``rhapsody --version``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from rhapsody._version import __version__
from rhapsody.registry.manager import ENTRY_POINT_GROUP, get_registry


def _backends(as_json: bool, check: bool) -> int:
    registry = get_registry()
    rows = []
    for name in sorted(registry.records):
        record = registry.records[name]
        problem = record.engine_problem() if check else None
        rows.append(
            {
                "name": name,
                "class": record.class_name,
                "distribution": record.distribution,
                "version": record.version,
                "engine": "not checked" if not check else ("available" if problem is None else f"unavailable: {problem}"),
                "summary": record.summary,
            }
        )
    broken = [{"entry_point": b.entry_point, "distribution": b.distribution, "reason": b.reason} for b in registry.broken]
    if as_json:
        print(json.dumps({"backends": rows, "broken": broken, "disabled": registry.disabled}, indent=2))
        return 0
    if not rows:
        print(f"no backend plugins installed (entry-point group {ENTRY_POINT_GROUP!r}); try: pip install rhapsody-concurrent")
    widths = {k: max([len(k)] + [len(str(r[k])) for r in rows]) for k in ("name", "distribution", "version")}
    if rows:
        print(f"{'name':<{widths['name']}}  {'distribution':<{widths['distribution']}}  {'version':<{widths['version']}}  engine")
    for r in rows:
        print(
            f"{r['name']:<{widths['name']}}  {r['distribution']:<{widths['distribution']}}  {r['version']:<{widths['version']}}  {r['engine']}"
        )
    for b in broken:
        print(f"broken: {b['entry_point']} from {b['distribution']}: {b['reason']}")
    for name in registry.disabled:
        print(f"disabled: {name}")
    return 0


def _journal(path: str, as_json: bool, failures: int) -> int:
    from rhapsody.errors import JournalError  # noqa: PLC0415 - only this command needs the journal
    from rhapsody.journal.report import as_text, summary  # noqa: PLC0415

    try:
        data = summary(path, failures)
    except JournalError as exc:
        print(f"rhapsody journal: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if as_json else as_text(data))
    return 0


def _report(checkpoint: str, output: str | None) -> int:
    """The HTML report of a telemetry checkpoint, made by the rhapsody-telemetry plugin."""
    from rhapsody.telemetry._plugin import plugin  # noqa: PLC0415 - only this command needs it

    try:
        api = plugin()
    except ModuleNotFoundError as exc:
        print(f"rhapsody report: {exc}", file=sys.stderr)
        return 2
    return int(api.report_command(checkpoint, output))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rhapsody", description="RHAPSODY: one async API for HPC and AI tasks on many engines")
    parser.add_argument("--version", action="version", version=f"rhapsody-core {__version__}")
    sub = parser.add_subparsers(dest="command")
    backends = sub.add_parser("backends", help="list installed backend plugins and whether their engines work here")
    backends.add_argument("--json", action="store_true", help="machine-readable output")
    backends.add_argument("--no-check", action="store_true", help="do not import engines to check them")
    journal = sub.add_parser("journal", help="what a journal file holds: tasks per state, runs, failures")
    journal.add_argument("path", help="the journal file (Session(journal=...))")
    journal.add_argument("--json", action="store_true", help="machine-readable output")
    journal.add_argument("--failures", type=int, default=20, help="how many failed tasks to list (default 20)")
    report = sub.add_parser("report", help="an HTML report of a telemetry checkpoint (needs rhapsody-telemetry)")
    report.add_argument("checkpoint", help="the .telemetry.jsonl file session.start_telemetry(checkpoint_path=...) wrote")
    report.add_argument("-o", "--output", help="where to write the page (default: next to the checkpoint, .html)")
    args = parser.parse_args(argv)
    if args.command == "backends":
        return _backends(args.json, not args.no_check)
    if args.command == "journal":
        return _journal(args.path, args.json, args.failures)
    if args.command == "report":
        return _report(args.checkpoint, args.output)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
