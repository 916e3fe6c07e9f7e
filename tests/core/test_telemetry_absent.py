"""Core without the telemetry plugin: the names user code imports exist and
say what to install. Runs where rhapsody-telemetry is not installed (nox's
core component installs core and the concurrent backend only); the plugin's
own tests cover the names when it is installed."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from rhapsody import Session

HINT = "pip install rhapsody-telemetry"


@pytest.fixture(autouse=True)
def _plugin_absent() -> None:
    try:
        distribution("rhapsody-telemetry")
    except PackageNotFoundError:
        return
    pytest.fail("rhapsody-telemetry is installed here: these tests are for core alone (nox -s \"tests(component='core')\")")


@pytest.mark.parametrize("module", ["rhapsody.telemetry.manager", "rhapsody.telemetry.events", "rhapsody.telemetry.interfaces.reader"])
def test_upstream_import_paths_name_the_distribution(module: str) -> None:
    with pytest.raises(ModuleNotFoundError, match=HINT):
        importlib.import_module(module)


def test_package_imports_and_its_names_say_what_to_install() -> None:
    import rhapsody.telemetry

    with pytest.raises(ModuleNotFoundError, match=HINT):
        rhapsody.telemetry.TelemetryManager  # noqa: B018
    with pytest.raises(ImportError, match=HINT):
        from rhapsody.telemetry import TaskStarted  # noqa: F401


def test_session_methods_name_the_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def go() -> None:
        session = Session(backends=["concurrent"], work_dir=tmp_path)
        with pytest.raises(ModuleNotFoundError, match=HINT):
            await session.start_telemetry()
        with pytest.raises(RuntimeError, match="start_telemetry"):
            session.get_telemetry()
        await session.close()

    asyncio.run(go())
    with pytest.raises(ModuleNotFoundError, match=HINT):
        Session(backends=["concurrent"], work_dir=tmp_path, progress=True)
    monkeypatch.setenv("RHAPSODY_PROGRESS", "1")  # from the environment: a warning, the session works
    session = Session(backends=["concurrent"], work_dir=tmp_path)
    asyncio.run(session.close())


def test_report_command_names_the_distribution(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rhapsody", "report", str(tmp_path / "x.jsonl")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and HINT in done.stderr
