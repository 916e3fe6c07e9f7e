"""Finds backend plugins through entry points and keeps one cached registry.

A plugin that fails to import or to register is logged with its entry point and
distribution and skipped; the others still load. Two distributions claiming one
backend name is an error naming both.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs
import pluggy

from rhapsody import hookspecs
from rhapsody.errors import BackendNotFoundError, PluginError
from rhapsody.log import get_logger, on_level_change
from rhapsody.observers import sync_state_logger
from rhapsody.registry.known import KNOWN_BACKENDS, KNOWN_CLASSES
from rhapsody.registry.records import BackendRecord

ENTRY_POINT_GROUP = "rhapsody.backends"
DISABLE_ENV = "RHAPSODY_DISABLE_PLUGINS"

_log = get_logger("rhapsody.plugins")


@attrs.frozen
class BrokenPlugin:
    """An entry point that could not be used, and why."""

    entry_point: str
    distribution: str
    reason: str


@attrs.define
class Registry:
    """Every backend the installed plugins provide, by backend name."""

    records: dict[str, BackendRecord] = attrs.field(factory=dict)
    broken: list[BrokenPlugin] = attrs.field(factory=list)
    disabled: list[str] = attrs.field(factory=list)

    def record(self, name: str) -> BackendRecord:
        try:
            return self.records[name]
        except KeyError:
            raise BackendNotFoundError(self._missing(name, name)) from None

    def record_for_class(self, class_name: str) -> BackendRecord | None:
        for record in self.records.values():
            if record.class_name == class_name or class_name in record.aliases:
                return record
        return None

    def _missing(self, what: str, name: str | None) -> str:
        installed = ", ".join(sorted(self.records)) or "none"
        text = f"no installed plugin provides backend {what!r} (installed backends: {installed})"
        if name in self.disabled:
            return f"{text}; it is disabled by {DISABLE_ENV}"
        for broken in self.broken:
            if broken.entry_point == name:
                return f"{text}; its plugin from {broken.distribution} is broken: {broken.reason}"
        if name in KNOWN_BACKENDS:
            return f"{text}; install it with: pip install {KNOWN_BACKENDS[name]}"
        return text

    def missing_class(self, class_name: str) -> str:
        return self._missing(class_name, KNOWN_CLASSES.get(class_name))


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<unknown distribution>", ""
    return dist.metadata["Name"], dist.version


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _load_registry(pm: PluginManager, eps: Iterable[EntryPoint]) -> Registry:
    registry = Registry()
    blocked = _disabled_names()
    # entry-point names each distribution declared: a record must match one of them
    declared: dict[str, set[str]] = {}
    plugin_dist: dict[int, tuple[str, str]] = {}
    for ep in eps:
        dist, version = _dist_of(ep)
        plugin_name = f"{dist}:{ep.name}"
        if ep.name in blocked or dist in blocked:
            pm.set_blocked(plugin_name)
        if pm.is_blocked(plugin_name):
            registry.disabled.append(ep.name)
            continue
        declared.setdefault(dist, set()).add(ep.name)
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure must not stop the others
            registry.broken.append(BrokenPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            _log.warning("plugin.broken", entry_point=ep.name, distribution=dist, error=str(exc))
            continue
        if pm.is_registered(plugin):  # several backend names may share one plugin module
            continue
        try:
            pm.register(plugin, name=plugin_name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl that does not match the spec
            registry.broken.append(BrokenPlugin(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            _log.warning("plugin.incompatible", entry_point=ep.name, distribution=dist, error=str(exc))
            continue
        plugin_dist[id(plugin)] = (dist, version)

    # Call each plugin's register hook on its own so one failure names its plugin.
    for impl in pm.hook.rhapsody_register_backends.get_hookimpls():
        dist, version = plugin_dist.get(id(impl.plugin), ("<registered directly>", ""))
        try:
            records = list(impl.function())  # type: ignore[call-overload]
        except Exception as exc:  # noqa: BLE001
            registry.broken.append(BrokenPlugin(impl.plugin_name, dist, f"register hook raised {type(exc).__name__}: {exc}"))
            _log.warning("plugin.register_failed", plugin=impl.plugin_name, distribution=dist, error=str(exc))
            continue
        for record in records:
            if not isinstance(record, BackendRecord):
                registry.broken.append(BrokenPlugin(impl.plugin_name, dist, f"returned {type(record).__name__}, not a BackendRecord"))
                continue
            if dist in declared and record.name not in declared[dist]:
                registry.broken.append(
                    BrokenPlugin(record.name, dist, f"backend {record.name!r} has no entry point of that name in {ENTRY_POINT_GROUP!r}")
                )
                _log.warning("plugin.undeclared_backend", backend=record.name, distribution=dist)
                continue
            record = attrs.evolve(record, distribution=dist, version=version)
            other = registry.records.get(record.name)
            if other is not None:
                raise PluginError(
                    f"backend name {record.name!r} is claimed by two distributions: "
                    f"{other.distribution} and {record.distribution}; uninstall one or set "
                    f"{DISABLE_ENV}={record.name}"
                )
            registry.records[record.name] = record
    return registry


#: hooks whose implementations only watch: one that raises is logged and skipped
OBSERVER_HOOKS = ("rhapsody_task_state_changed", "rhapsody_task_cancel")


def _guarded(function: Any, plugin_name: str, hook_name: str) -> Any:
    def guarded(*args: Any) -> Any:
        try:
            return function(*args)
        except Exception as exc:  # noqa: BLE001 - an observer must never break a task or another observer
            _log.error("observer.failed", plugin=plugin_name, hook=hook_name, error=f"{type(exc).__name__}: {exc}")
            return None

    guarded.rhapsody_guarded = True  # type: ignore[attr-defined]
    return guarded


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, with two rules of RHAPSODY's: an observer hook
    implementation that raises is logged and the others still run, and a
    hook implementation that matches no hook spec (a misspelt name) is an
    error at registration, not silence."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)

    def register(self, plugin: object, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is None:  # blocked
            return None
        try:
            self.check_pending()
        except pluggy.PluginValidationError:
            self.unregister(plugin)
            raise
        for hook_name in OBSERVER_HOOKS:
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                watcher = impl.plugin is plugin and not (impl.hookwrapper or impl.wrapper)
                if watcher and not getattr(impl.function, "rhapsody_guarded", False):
                    impl.function = _guarded(impl.function, impl.plugin_name, hook_name)
        return registered


def live_impls(hook: Any) -> list[Any]:
    """The list of ``hook``'s implementations that pluggy itself keeps up to date
    as plugins come and go: a hot path asks "is anyone listening?" by its truth,
    where ``get_hookimpls()`` copies it on every call. (Read from pluggy's
    HookCaller; tests/core checks it follows a registration.)"""
    impls = getattr(hook, "_hookimpls", None)
    if not isinstance(impls, list):  # a pluggy that keeps them otherwise: ask the slow way
        return _AskEachTime(hook)
    return impls


class _AskEachTime(list):  # type: ignore[type-arg]
    """Truthy exactly when ``hook`` has implementations, asked on each test."""

    def __init__(self, hook: Any) -> None:
        super().__init__()
        self._hook = hook

    def __bool__(self) -> bool:
        return bool(self._hook.get_hookimpls())

    def __len__(self) -> int:
        return len(self._hook.get_hookimpls())


@functools.cache
def _cached() -> tuple[PluginManager, Registry]:
    pm = PluginManager()
    on_level_change(lambda: sync_state_logger(pm))
    sync_state_logger(pm)
    registry = _load_registry(pm, entry_points(group=ENTRY_POINT_GROUP))
    return pm, registry


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (built once, on first use)."""
    return _cached()[0]


def get_registry() -> Registry:
    return _cached()[1]


def reset_plugins() -> None:
    """Forget the cached plugins (tests, or after installing a plugin at run time)."""
    _cached.cache_clear()


def discover_backends() -> dict[str, BackendRecord]:
    """Installed backends by name (no engine is imported)."""
    return dict(get_registry().records)


def get_backend_class(name: str) -> type[Any]:
    return get_registry().record(name).load()
