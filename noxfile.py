"""Developer and CI entry points.

nox -s tests         every component, each in its own virtualenv with only
                     its declared dependencies, against real engines
nox -s "tests(component='dask')"   one component
nox -s demo          the example workload on the default backend
nox -s lint typecheck   (typecheck also runs as a component of tests)
nox -s bench         side-by-side benchmarks (python -m benchmarks)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CORE = str(ROOT / "rhapsody_core")
PLUGINS = ROOT / "plugins"
TEST_TOOLS = ["pytest>=8", "hypothesis>=6.100", "radical.asyncflow>=0.6"]

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True


def _plugin(name: str) -> str:
    return str(PLUGINS / f"rhapsody_{name}")


def _basetemp(session: nox.Session) -> str:
    # pytest's temp dirs inside the session's own folder, not /tmp: a run leaves nothing behind there
    return f"--basetemp={(Path(session.create_tmp()) / 'pytest').resolve()}"


def _pytest(session: nox.Session, *paths: str, env: dict[str, str] | None = None) -> None:
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "-ra", _basetemp(session), *paths, *session.posargs, env=env or {})


def _tests_core(session: nox.Session) -> None:
    session.install(CORE, _plugin("concurrent"), *TEST_TOOLS)
    _pytest(session, "tests/core")


def _tests_concurrent(session: nox.Session) -> None:
    session.install(CORE, _plugin("concurrent"), *TEST_TOOLS)
    _pytest(session, "plugins/rhapsody_concurrent/tests", "tests/benchmarks/test_bench_concurrent.py")


def _tests_compat(session: nox.Session) -> None:
    # Programs written for rhapsody-py 0.6, run unchanged against core + the default backend.
    session.install(CORE, _plugin("concurrent"), *TEST_TOOLS)
    _pytest(session, "tests/compat")


def _tests_example_plugin(session: nox.Session) -> None:
    # A third-party backend living outside the repo's plugins/, found only through its entry point.
    session.install(CORE, str(ROOT / "examples" / "rhapsody_example_backend"), *TEST_TOOLS)
    _pytest(session, "examples/rhapsody_example_backend/tests")


def _tests_dask(session: nox.Session) -> None:
    session.install(CORE, _plugin("dask"), *TEST_TOOLS)
    _pytest(session, "plugins/rhapsody_dask/tests", "tests/benchmarks/test_bench_dask.py")


def _tests_dragon(session: nox.Session) -> None:
    session.install(CORE, _plugin("dragon"), *TEST_TOOLS)
    bin_dir = str(Path(session.bin))
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # small shared-memory segments: the defaults reserve ~8 GiB of /dev/shm
        "DRAGON_DEFAULT_SEG_SZ": "268435456",
        "DRAGON_INF_SEG_SZ": "134217728",
    }
    # Plain pytest first (no launcher): programs that start Dragon's local runtime themselves, and
    # programs each run by a `dragon` launcher of their own (one started from inside another
    # launcher's runtime hung).
    plain = [str(PLUGINS / "rhapsody_dragon" / "tests" / f"test_{name}.py") for name in ("plain_python", "upstream_programs")]
    _pytest(session, *plain, env=env)
    basetemp = _basetemp(session)  # resolved here, before the chdir below
    # The launcher writes runtime files into its working directory: run it in a temp dir.
    with tempfile.TemporaryDirectory(prefix="rhapsody-dragon-") as tmp, session.chdir(tmp):
        session.run(
            "dragon",
            "python",
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-ra",
            basetemp,
            str(PLUGINS / "rhapsody_dragon" / "tests"),
            *(f"--ignore={path}" for path in plain),
            str(ROOT / "tests" / "benchmarks" / "test_bench_dragon.py"),
            *session.posargs,
            env=env,
            external=False,
        )


def _tests_radical(session: nox.Session) -> None:
    session.install(CORE, _plugin("radical"), *TEST_TOOLS)
    _pytest(session, "plugins/rhapsody_radical/tests", "tests/benchmarks/test_bench_radical.py")


TYPED_SOURCES = {
    "rhapsody": "rhapsody_core/src",
    "rhapsody_concurrent": "plugins/rhapsody_concurrent/src",
    "rhapsody_dask": "plugins/rhapsody_dask/src",
    "rhapsody_dragon": "plugins/rhapsody_dragon/src",
    "rhapsody_radical": "plugins/rhapsody_radical/src",
}


def _typecheck(session: nox.Session) -> None:
    # Core and every plugin, strict. Engines are not installed here: their
    # imports are typed as Any (ignore_missing_imports), our own code is not.
    session.install("mypy>=1.10", CORE)
    mypy_path = os.pathsep.join(str(ROOT / path) for path in TYPED_SOURCES.values())
    packages = [arg for name in TYPED_SOURCES for arg in ("-p", name)]
    session.run("mypy", *packages, env={"MYPYPATH": mypy_path})


COMPONENTS = {
    "typecheck": _typecheck,
    "core": _tests_core,
    "concurrent": _tests_concurrent,
    "compat": _tests_compat,
    "example_plugin": _tests_example_plugin,
    "dask": _tests_dask,
    "dragon": _tests_dragon,
    "radical": _tests_radical,
}


@nox.session(python="3.11")
@nox.parametrize("component", list(COMPONENTS))
def tests(session: nox.Session, component: str) -> None:
    """Run one component's tests in a virtualenv holding only what it declares."""
    COMPONENTS[component](session)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The example workload on the embedded default backend."""
    session.install(CORE, _plugin("concurrent"))
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on core and every plugin (also part of ``nox -s tests``)."""
    _typecheck(session)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks of every backend; pass --quick for a smoke run.

    One virtualenv holds all four plugins (their engines co-install without
    conflicts); ``python -m benchmarks`` runs each engine in a child process of
    its own (Dragon's under the ``dragon`` launcher) and merges the results.
    Options after ``--`` go to it, e.g. ``nox -s bench -- --quick --engines dask``.
    """
    session.install(CORE, *(_plugin(name) for name in ("concurrent", "dask", "dragon", "radical")), "matplotlib")
    bin_dir = str(Path(session.bin))
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # RP and the dragon launcher need the venv's bin/ first
        # small Dragon shared-memory segments: the defaults reserve ~8 GiB of /dev/shm
        "DRAGON_DEFAULT_SEG_SZ": os.environ.get("DRAGON_DEFAULT_SEG_SZ", "268435456"),
        "DRAGON_INF_SEG_SZ": os.environ.get("DRAGON_INF_SEG_SZ", "134217728"),
    }
    session.run("python", "-m", "benchmarks", *session.posargs, env=env)
