"""``rhapsody report CHECKPOINT [-o OUTPUT]``."""

from __future__ import annotations

import sys
from pathlib import Path

from rhapsody_telemetry.checkpoint import SUFFIX
from rhapsody_telemetry.report.load import load_run
from rhapsody_telemetry.report.page import render


def default_output(checkpoint: Path) -> Path:
    name = checkpoint.name
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else checkpoint.stem
    return checkpoint.with_name(stem + ".report.html")


def write_report(checkpoint: str | Path, output: str | Path | None = None) -> Path:
    source = Path(checkpoint)
    target = Path(output) if output is not None else default_output(source)
    page = render(load_run(source), str(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return target


def run(checkpoint: str, output: str | None) -> int:
    try:
        target = write_report(checkpoint, output)
    except (OSError, ValueError, KeyError) as exc:
        print(f"rhapsody report: cannot make a report of {checkpoint}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(target)
    return 0
