"""Fixtures for the core tests: clean environment, fresh plugin registry, real
throw-away distributions on sys.path, an observer plugin, logging restore."""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from toys import Recorder, run, write_distribution

import rhapsody.backends
from rhapsody.observers import sync_state_logger
from rhapsody.registry import get_plugin_manager, reset_plugins

ENV_VARS = ("RHAPSODY_DISABLE_PLUGINS", "RHAPSODY_LOG_LEVEL", "RHAPSODY_LOG_FORMAT", "RHAPSODY_WORK_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    """A registry rebuilt from what is on sys.path now, and forgotten afterwards,
    including classes `rhapsody.backends` cached as module attributes."""
    cached = dict(vars(rhapsody.backends))
    reset_plugins()
    yield
    reset_plugins()
    for name in [n for n in vars(rhapsody.backends) if n not in cached]:
        delattr(rhapsody.backends, name)


_site_counter = itertools.count()


class Site:
    """A directory of real distributions, put on sys.path by `activate`."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.tag = f"s{next(_site_counter)}"
        self.modules: list[str] = []

    def module(self, stem: str) -> str:
        """A module name unique to this test (sys.modules outlives the test)."""
        name = f"rhapsody_testplugin_{stem}_{self.tag}"
        self.modules.append(name)
        return name

    def add(self, dist: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "0.1") -> None:
        write_distribution(self.root, dist, entry_points, modules, version)

    def activate(self) -> None:
        self.monkeypatch.syspath_prepend(str(self.root))
        reset_plugins()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugins: None) -> Iterator[Site]:
    s = Site(tmp_path / "site", monkeypatch)
    s.root.mkdir()
    yield s
    for name in s.modules:
        sys.modules.pop(name, None)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """An observer plugin on the process-wide plugin manager (register it before
    building backends if the test also resets plugins)."""
    rec = Recorder()
    pm = get_plugin_manager()
    pm.register(rec)
    yield rec
    if pm.is_registered(rec):
        pm.unregister(rec)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger("rhapsody")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    sync_state_logger(get_plugin_manager())  # drop the DEBUG state logger again


@pytest.fixture
def runner() -> Callable[..., Any]:
    return run
