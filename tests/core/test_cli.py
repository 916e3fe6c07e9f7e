"""The ``rhapsody`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toys import plugin_source

import rhapsody
from rhapsody.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHAPSODY_")}
    return subprocess.run([sys.executable, "-m", "rhapsody", *args], capture_output=True, text=True, timeout=120, env=env)


def test_version() -> None:
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"rhapsody-core {rhapsody.__version__}"
    script = Path(sys.executable).parent / "rhapsody"
    assert script.exists(), "the rhapsody console script is installed"
    via_script = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert via_script.stdout == out.stdout


def test_backends_lists_concurrent() -> None:
    out = _cli("backends")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "distribution", "version", "engine"]
    row = next(line for line in lines if line.startswith("concurrent "))
    assert row.split()[:4] == ["concurrent", "rhapsody-concurrent", "0.1.0", "available"]


def test_backends_json() -> None:
    out = _cli("backends", "--json", "--no-check")
    data = json.loads(out.stdout)
    (row,) = [r for r in data["backends"] if r["name"] == "concurrent"]
    assert row["distribution"] == "rhapsody-concurrent" and row["version"] == "0.1.0"
    assert row["class"] == "ConcurrentExecutionBackend" and row["engine"] == "not checked"


def test_backends_shows_broken_disabled_and_unavailable(site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    mod = site.module("noengine")
    site.add(
        "rhapsody-noengine", {"noengine": mod}, {mod: plugin_source(mod, ("noengine", "somewhere:Backend"), problem="libfoo not found")}
    )
    bad = site.module("bad")
    site.add("rhapsody-bad", {"bad": bad}, {bad: "raise ImportError('half installed')\n"})
    off = site.module("off")
    site.add("rhapsody-off", {"off": off}, {off: plugin_source(off, ("off", "somewhere:Off"))})
    monkeypatch.setenv("RHAPSODY_DISABLE_PLUGINS", "off")
    site.activate()
    assert main(["backends"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("noengine "))
    assert "rhapsody-noengine" in row and "unavailable: libfoo not found" in row
    assert "broken: bad from rhapsody-bad: ImportError: half installed" in text
    assert "disabled: off" in text
    assert main(["backends", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["disabled"] == ["off"]
    assert data["broken"] == [{"entry_point": "bad", "distribution": "rhapsody-bad", "reason": "ImportError: half installed"}]


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "backends" in capsys.readouterr().out
