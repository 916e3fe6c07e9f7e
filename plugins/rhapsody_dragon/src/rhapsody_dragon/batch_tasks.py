"""How one RHAPSODY task becomes a Dragon Batch task (V3), with the
``process_template`` / ``process_templates`` / ``policy`` / ``timeout`` options
it was given:

- a function without templates: ``Batch.function`` (Batch's own workers);
- a function with a template: the call runs in a Dragon process of its own
  (``Batch.process``), or one per rank as a job (``Batch.job``), each writing
  its packed outcome to a file, as V1 does, with the template's cwd, env and
  policy;
- an executable: its ranks as process templates through the wrapper
  (`rhapsody_dragon.wrapper`).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rhapsody.engine import TaskHandle
from rhapsody.engine.launch import RANK_ENV, RANKS_ENV, LaunchSpec
from rhapsody.engine.process import preflight
from rhapsody.errors import BackendError, TaskValidationError
from rhapsody_dragon import functions
from rhapsody_dragon.wrapper import WrappedRanks

_ENDED = threading.Event()  # for WrappedRanks.stop: the ranks ended; do not wait for late pid files
_ENDED.set()


class BatchEntry:
    """One task on its way through Batch; ``dtask`` is Batch's task once created.
    Raises `TaskValidationError` for a bad ``timeout``."""

    def __init__(self, handle: TaskHandle, base: str) -> None:
        self.handle, self.base = handle, base
        self.dtask: Any = None
        self.started = False
        self.created_at = time.monotonic()
        kw = handle.task.task_backend_specific_kwargs
        self.timeout = _timeout(handle, kw.get("timeout"))
        # per-rank cwd / env / policy: an executable's ranks, or a function's processes
        self.ranks: list[dict[str, Any]] = []
        self.wrapped: WrappedRanks | None = None
        if handle.launch is not None:
            self.ranks = rank_layout(handle)
            self.wrapped = WrappedRanks(_with_ranks(handle.launch, len(self.ranks)), base)
        elif kw.get("process_templates") or kw.get("process_template") is not None:
            self.ranks = rank_layout(handle)

    @property
    def in_processes(self) -> bool:
        """A function task that runs in Dragon processes of its own."""
        return self.wrapped is None and bool(self.ranks)

    def result_path(self, rank: int) -> str:
        return f"{self.base}.{rank}.result"

    def started_where(self) -> str | None:
        """Batch has no "started" event: a function writes a mark file, an
        executable's wrapper its pid file; each says where it runs
        (``<host>/pid <pid>``). None: not started yet."""
        if self.wrapped is not None:
            return self.wrapped.where()
        return functions.read_mark(self.base + ".started")

    def make(self, batch: Any) -> Any:
        """Batch's task for this entry; None when it cannot run (then it has ended already)."""
        handle = self.handle
        opts = batch.options(name=handle.uid) if self.timeout is None else batch.options(name=handle.uid, timeout=self.timeout)
        if self.wrapped is None:
            payload = functions.pack(handle)
            if payload is None:
                return None
            if not self.ranks:
                return opts.function(functions.batch_main, payload, self.base + ".started")
            templates = [self._function_template(payload, rank, options) for rank, options in enumerate(self.ranks)]
        else:
            templates = []
            for rank, options in enumerate(self.ranks):
                spec = _rank_spec(self.wrapped.spec, options)
                failure = preflight(spec)
                if failure is not None:
                    handle.finish(failure)
                    return None
                templates.append(_template(self.wrapped, rank, spec, options.get("policy")))
        if len(templates) == 1:
            return opts.process(templates[0])
        return opts.job([(1, t) for t in templates])

    def _function_template(self, payload: bytes, rank: int, options: dict[str, Any]) -> Any:
        from dragon.native.process import ProcessTemplate  # noqa: PLC0415

        env = {**os.environ, **{str(k): str(v) for k, v in (options.get("env") or {}).items()}}
        if len(self.ranks) > 1:
            env.update({RANK_ENV: str(rank), RANKS_ENV: str(len(self.ranks))})
        cwd = os.fspath(options["cwd"]) if options.get("cwd") is not None else os.getcwd()
        mark = self.base + ".started" if rank == 0 else None
        kw: dict[str, Any] = {"cwd": cwd, "env": env}
        if options.get("policy") is not None:
            kw["policy"] = options["policy"]
        return ProcessTemplate(functions.process_main, args=(payload, self.result_path(rank), mark), **kw)

    def recorded_end(self) -> list[int] | None:
        """The exit codes of a task whose ranks ran as processes, read from
        the files they left when they ended (the wrapper's pid files, a
        function's result files); None when some rank left none, or the task
        ran on Batch's own workers. Lets a task whose processes ended be
        reported as they ended when Batch fails it afterwards."""
        if self.wrapped is not None:
            return self.wrapped.recorded_codes()
        if self.in_processes and all(os.path.exists(self.result_path(rank)) for rank in range(len(self.ranks))):
            return [0] * len(self.ranks)  # process_main returned: its process exits 0
        return None

    def finish(self, handle: TaskHandle, value: Any) -> None:
        """End the task from what Batch returned for it."""
        codes = value if isinstance(value, list) else [value]
        if self.wrapped is not None and any(isinstance(c, int) and c < 0 for c in codes):
            # Dragon killed a wrapper (the wrapper itself reports a killed program as 128 + n):
            # Batch's timeout. The program, in a session of its own, is stopped here.
            self.wrapped.stop(_ENDED)
            if self.timeout is not None:
                handle.failed(TimeoutError(f"task {handle.uid}: Dragon Batch stopped it at its timeout of {self.timeout:g} s"))
            else:
                handle.failed(BackendError(f"task {handle.uid}: Dragon stopped its process (exit codes {codes})"))
        elif self.wrapped is not None:
            handle.finish(self.wrapped.outcome(codes))
        elif self.in_processes:
            functions.finish_ranks(handle, [self.result_path(rank) for rank in range(len(self.ranks))], codes)
        else:
            functions.finish_packed(handle, value, self.timeout)

    def cleanup(self) -> None:
        if self.wrapped is not None:
            self.wrapped.cleanup()
        paths = [self.base + ".started"]
        for rank in range(len(self.ranks) if self.in_processes else 0):
            paths += [self.result_path(rank), self.result_path(rank) + ".tmp"]
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass


def _timeout(handle: TaskHandle, value: Any) -> float | None:
    """``task_backend_specific_kwargs["timeout"]``: seconds Batch lets the task run."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise TaskValidationError(
            handle.uid, "task_backend_specific_kwargs.timeout", f"must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def rank_layout(handle: TaskHandle) -> list[dict[str, Any]]:
    """One entry per rank: its ``process_template`` options
    (``process_templates``: ``[(nranks, {...}), ...]``), ``policy`` applying to all."""
    kw = handle.task.task_backend_specific_kwargs
    templates = kw.get("process_templates")
    if not templates:
        templates = [(handle.task.resources.ranks, kw.get("process_template") or {})]
    layout: list[dict[str, Any]] = []
    for n, template in templates:
        options = dict(template or {})
        if kw.get("policy") is not None:
            options["policy"] = kw["policy"]
        layout.extend(options for _ in range(int(n)))
    return layout


def _template(wrapped: WrappedRanks, rank: int, spec: LaunchSpec, policy: Any) -> Any:
    from dragon.native.process import ProcessTemplate  # noqa: PLC0415

    target, args = wrapped.command(rank)
    kw: dict[str, Any] = {"cwd": spec.cwd or os.getcwd(), "env": spec.environ(rank)}
    if policy is not None:
        kw["policy"] = policy
    # the wrapper writes the program's output; nothing for Dragon to forward
    return ProcessTemplate(target, args=args, stdout=ProcessTemplate.DEVNULL, stderr=ProcessTemplate.DEVNULL, **kw)


def _with_ranks(spec: LaunchSpec, ranks: int) -> LaunchSpec:
    if spec.ranks == ranks:
        return spec
    return LaunchSpec(
        spec.uid, spec.argv, env=spec.env, cwd=spec.cwd, stdout_path=spec.stdout_path, stderr_path=spec.stderr_path, ranks=ranks
    )


def _rank_spec(spec: LaunchSpec, options: dict[str, Any]) -> LaunchSpec:
    """``spec`` with a ``process_template``'s own ``cwd`` / ``env`` over it."""
    if options.get("cwd") is None and not options.get("env"):
        return spec
    env = {**spec.env, **{str(k): str(v) for k, v in (options.get("env") or {}).items()}}
    cwd = os.fspath(options["cwd"]) if options.get("cwd") is not None else spec.cwd
    return LaunchSpec(spec.uid, spec.argv, env=env, cwd=cwd, stdout_path=spec.stdout_path, stderr_path=spec.stderr_path, ranks=spec.ranks)
