"""Plugin discovery through the ``rhapsody.backends`` entry-point group, with
real throw-away distributions (dist-info + entry_points.txt + module) put on
sys.path for one test."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from toys import plugin_source, run

import rhapsody
import rhapsody.backends
from rhapsody import BackendNotFoundError, BackendRecord, ComputeTask, PluginError, TaskState
from rhapsody.registry import ENTRY_POINT_GROUP, Registry, discover_backends, get_plugin_manager, get_registry
from rhapsody.testing import tasks as fn

# A backend class as a plugin ships it: a Backend whose __init__ only builds its engine.
TOY_CLASS = """
from rhapsody import Backend
from toys import AsyncioEngine

class {cls}(Backend):
    def __init__(self, name="toy"):
        super().__init__(AsyncioEngine(), name)
"""


def _add_toy(site, dist: str = "rhapsody-toy", name: str = "toy", cls: str = "ToyExecutionBackend", problem=None) -> str:  # type: ignore[no-untyped-def]
    mod = site.module(name)
    impl = site.module(f"{name}_impl")
    site.add(
        dist,
        {name: mod},
        {mod: plugin_source(mod, (name, f"{impl}:{cls}"), problem=problem), impl: TOY_CLASS.format(cls=cls)},
    )
    return mod


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(str(r.msg) for r in caplog.records if r.name.startswith("rhapsody") and r.levelno >= logging.WARNING)


def _warning_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The structured warning events (structlog hands stdlib logging the event dict)."""
    return [
        dict(r.msg) for r in caplog.records if r.name.startswith("rhapsody") and r.levelno >= logging.WARNING and isinstance(r.msg, dict)
    ]


def test_entry_point_group_name() -> None:
    assert ENTRY_POINT_GROUP == "rhapsody.backends"


def test_installed_default_plugin(fresh_plugins: None) -> None:
    record = discover_backends()["concurrent"]
    assert record.distribution == "rhapsody-concurrent" and record.version
    assert record.class_name == "ConcurrentExecutionBackend"


def test_toy_plugin_is_discovered_and_runs(site) -> None:  # type: ignore[no-untyped-def]
    _add_toy(site)
    site.activate()
    records = discover_backends()
    assert {"toy", "concurrent"} <= set(records)
    toy = records["toy"]
    assert (toy.distribution, toy.version, toy.class_name) == ("rhapsody-toy", "0.1", "ToyExecutionBackend")
    assert toy.engine_problem() is None

    from rhapsody.backends import ToyExecutionBackend  # resolved through the registry

    assert "ToyExecutionBackend" in dir(rhapsody.backends)
    backend = rhapsody.get_backend("toy")
    assert isinstance(backend, ToyExecutionBackend) and backend.name == "toy"
    t = ComputeTask(function=fn.add, args=(20, 22))

    async def go() -> None:
        async with backend:
            await backend.submit_tasks([t])
            await t

    run(go())
    assert t.state is TaskState.DONE and t.return_value == 42


def test_broken_plugin_is_logged_and_skipped(site, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    _add_toy(site)
    bad = site.module("broken")
    site.add("rhapsody-broken", {"broken": bad}, {bad: "import rhapsody_module_that_does_not_exist\n"})
    raising = site.module("raising")
    site.add(
        "rhapsody-raising",
        {"raising": raising},
        {
            raising: "from rhapsody import hookimpl\n\n@hookimpl\ndef rhapsody_register_backends():\n    raise RuntimeError('register exploded')\n"
        },
    )
    site.activate()
    caplog.set_level(logging.WARNING)
    records = discover_backends()
    assert {"toy", "concurrent"} <= set(records)
    assert "broken" not in records and "raising" not in records
    broken = {b.distribution: b for b in get_registry().broken}
    assert broken["rhapsody-broken"].entry_point == "broken"
    assert "ModuleNotFoundError" in broken["rhapsody-broken"].reason
    assert "register exploded" in broken["rhapsody-raising"].reason
    assert "raising" in broken["rhapsody-raising"].entry_point
    events = _warning_events(caplog)
    assert any(e.get("entry_point") == "broken" and e.get("distribution") == "rhapsody-broken" for e in events), events
    logged = _warnings(caplog)
    assert "rhapsody-raising" in logged and "register exploded" in logged
    with pytest.raises(BackendNotFoundError, match=r"rhapsody-broken is broken"):
        rhapsody.get_backend("broken")


def test_incompatible_hookimpl_is_skipped(site, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    _add_toy(site)
    odd = site.module("odd")
    site.add(
        "rhapsody-odd",
        {"odd": odd},
        {odd: "from rhapsody import hookimpl\n\n@hookimpl\ndef rhapsody_register_backends(colour):\n    return []\n"},
    )
    notrecord = site.module("notrecord")
    site.add(
        "rhapsody-notrecord",
        {"notrecord": notrecord},
        {notrecord: "from rhapsody import hookimpl\n\n@hookimpl\ndef rhapsody_register_backends():\n    return [{'name': 'notrecord'}]\n"},
    )
    site.activate()
    caplog.set_level(logging.WARNING)
    assert "toy" in discover_backends() and "odd" not in discover_backends() and "notrecord" not in discover_backends()
    reasons = {b.distribution: b.reason for b in get_registry().broken}
    assert "rhapsody-odd" in reasons and "colour" in reasons["rhapsody-odd"]
    assert "not a BackendRecord" in reasons["rhapsody-notrecord"]
    assert "rhapsody-odd" in _warnings(caplog)


def test_two_distributions_claiming_one_name(site) -> None:  # type: ignore[no-untyped-def]
    _add_toy(site, dist="rhapsody-first", name="dup")
    mod = site.module("dup2")
    impl = site.module("dup2_impl")
    site.add("rhapsody-second", {"dup": mod}, {mod: plugin_source(mod, ("dup", f"{impl}:Other")), impl: TOY_CLASS.format(cls="Other")})
    site.activate()
    with pytest.raises(PluginError) as info:
        discover_backends()
    assert "rhapsody-first" in str(info.value) and "rhapsody-second" in str(info.value) and "'dup'" in str(info.value)


def test_conflict_resolved_by_disabling_one_distribution(site, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _add_toy(site, dist="rhapsody-first", name="dup")
    mod = site.module("dup2")
    impl = site.module("dup2_impl")
    site.add("rhapsody-second", {"dup": mod}, {mod: plugin_source(mod, ("dup", f"{impl}:Other")), impl: TOY_CLASS.format(cls="Other")})
    monkeypatch.setenv("RHAPSODY_DISABLE_PLUGINS", " rhapsody-first ,unrelated")
    site.activate()
    assert discover_backends()["dup"].distribution == "rhapsody-second"


@pytest.mark.parametrize("blocked", ["toy", "rhapsody-toy"], ids=["entry-point", "distribution"])
def test_disable_plugins(site, monkeypatch: pytest.MonkeyPatch, blocked: str) -> None:  # type: ignore[no-untyped-def]
    mod = _add_toy(site)
    monkeypatch.setenv("RHAPSODY_DISABLE_PLUGINS", f"nothing,{blocked}")
    site.activate()
    assert "toy" not in discover_backends() and "concurrent" in discover_backends()
    assert "toy" in get_registry().disabled
    assert get_plugin_manager().is_blocked("rhapsody-toy:toy"), "disabled through pluggy's own blocking"
    assert mod not in sys.modules, "a disabled plugin is not even imported"
    with pytest.raises(BackendNotFoundError, match="disabled by RHAPSODY_DISABLE_PLUGINS"):
        rhapsody.get_backend("toy")
    with pytest.raises(ImportError):
        from rhapsody.backends import ToyExecutionBackend  # noqa: F401


def test_unknown_backend_lists_installed(site) -> None:  # type: ignore[no-untyped-def]
    _add_toy(site)
    site.activate()
    with pytest.raises(BackendNotFoundError) as info:
        rhapsody.get_backend("no-such-engine")
    text = str(info.value)
    assert "no-such-engine" in text
    for name in discover_backends():
        assert name in text
    assert "pip install" not in text
    with pytest.raises(ImportError, match=r"concurrent.*toy|toy.*concurrent"):
        from rhapsody.backends import NoSuchExecutionBackend  # noqa: F401
    with pytest.raises(AttributeError):
        rhapsody.backends.not_a_backend_name  # noqa: B018


def test_record_without_matching_entry_point_is_rejected(site, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    mod = site.module("alpha")
    impl = site.module("alpha_impl")
    site.add(
        "rhapsody-alpha",
        {"alpha": mod},
        {
            mod: plugin_source(mod, ("alpha", f"{impl}:Alpha"), ("beta", f"{impl}:Beta")),
            impl: TOY_CLASS.format(cls="Alpha") + "\nBeta = Alpha\n",
        },
    )
    site.activate()
    caplog.set_level(logging.WARNING)
    records = discover_backends()
    assert "alpha" in records and "beta" not in records
    (bad,) = [b for b in get_registry().broken if b.entry_point == "beta"]
    assert bad.distribution == "rhapsody-alpha" and "no entry point" in bad.reason
    assert "beta" in _warnings(caplog)


def test_several_entry_points_share_one_module(site) -> None:  # type: ignore[no-untyped-def]
    mod = site.module("multi")
    impl = site.module("multi_impl")
    source = plugin_source(mod, ("one", f"{impl}:One"), ("two", f"{impl}:Two"))
    source = "CALLS = []\n" + source.replace(
        "def rhapsody_register_backends():\n", "def rhapsody_register_backends():\n    CALLS.append(1)\n"
    )
    site.add(
        "rhapsody-multi",
        {"one": mod, "two": mod},
        {mod: source, impl: TOY_CLASS.format(cls="One") + TOY_CLASS.format(cls="Two")},
    )
    site.activate()
    records = discover_backends()
    assert records["one"].class_name == "One" and records["two"].class_name == "Two"
    assert sys.modules[mod].CALLS == [1], "one module, one registration"
    assert not get_registry().broken


def test_aliases_and_engine_check(site) -> None:  # type: ignore[no-untyped-def]
    mod = site.module("aliased")
    impl = site.module("aliased_impl")
    site.add(
        "rhapsody-aliased",
        {"aliased": mod},
        {
            mod: f"""
from rhapsody import BackendRecord, hookimpl

@hookimpl
def rhapsody_register_backends():
    return [BackendRecord(name="aliased", backend_class="{impl}:NewBackend", aliases=["OldBackend"],
                          engine_check="{mod}:check")]

def check():
    return "engine library missing"
""",
            impl: TOY_CLASS.format(cls="NewBackend"),
        },
    )
    site.activate()
    record = discover_backends()["aliased"]
    assert record.aliases == ("OldBackend",)
    assert record.engine_problem() == "engine library missing"
    assert rhapsody.backends.OldBackend is rhapsody.backends.NewBackend


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="backend_class"):
        BackendRecord(name="x", backend_class="no_colon_here")
    with pytest.raises(ValueError, match="engine_check"):
        BackendRecord(name="x", backend_class="a:B", engine_check="a:b:c")
    r = BackendRecord(name="x", backend_class="os.path:join", engine_check="builtins:len")
    assert r.class_name == "join" and r.load() is os.path.join
    assert "TypeError" in (r.engine_problem() or ""), "a failing check is itself the answer"


def test_known_backend_not_installed_message() -> None:
    registry = Registry(records={})
    assert "pip install rhapsody-dask" in registry.missing_class("DaskExecutionBackend")
    assert "pip install rhapsody-radical" in registry.missing_class("RadicalExecutionBackend")
    with pytest.raises(BackendNotFoundError, match="pip install rhapsody-dragon"):
        registry.record("dragon_v3")


def test_known_class_not_installed_says_what_to_install() -> None:
    """In a fresh interpreter with the dask plugin blocked, so the outcome does not
    depend on whether rhapsody-dask happens to be installed here."""
    code = """
import importlib.metadata as md
try:
    md.distribution("rhapsody-dask")
    installed = True
except md.PackageNotFoundError:
    installed = False
try:
    from rhapsody.backends import DaskExecutionBackend
except ImportError as exc:
    print(installed, exc)
else:
    print("IMPORTED")
"""
    env = {**os.environ, "RHAPSODY_DISABLE_PLUGINS": "dask"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "IMPORTED" not in out
    assert "DaskExecutionBackend" in out
    if out.startswith("False"):
        assert "pip install rhapsody-dask" in out
    else:
        assert out.startswith("True") and "disabled by RHAPSODY_DISABLE_PLUGINS" in out


def test_registry_is_cached_and_reset(site) -> None:  # type: ignore[no-untyped-def]
    pm, registry = get_plugin_manager(), get_registry()
    assert get_plugin_manager() is pm and get_registry() is registry
    assert "toy" not in discover_backends()
    _add_toy(site)
    site.activate()  # resets
    assert get_plugin_manager() is not pm and "toy" in discover_backends()


def test_get_backend_with_own_instance_name(fresh_plugins: None) -> None:
    backend = rhapsody.get_backend("concurrent", name="local-2")
    assert backend.name == "local-2"
