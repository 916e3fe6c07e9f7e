"""How one RHAPSODY task becomes a Dragon Batch task (V3): a function call,
or an executable's ranks as process templates, each with the
``process_template`` / ``process_templates`` / ``policy`` options it was given."""

from __future__ import annotations

import os
from typing import Any

from rhapsody.engine import TaskHandle
from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.process import preflight
from rhapsody_dragon import functions
from rhapsody_dragon.wrapper import WrappedRanks


class BatchEntry:
    """One task on its way through Batch; ``dtask`` is Batch's task once created."""

    def __init__(self, handle: TaskHandle, base: str) -> None:
        self.handle, self.base = handle, base
        self.dtask: Any = None
        self.started = False
        self.ranks: list[dict[str, Any]] = []  # an executable's per-rank cwd / env / policy
        self.wrapped: WrappedRanks | None = None
        if handle.launch is not None:
            self.ranks = rank_layout(handle)
            self.wrapped = WrappedRanks(_with_ranks(handle.launch, len(self.ranks)), base)

    def has_started(self) -> bool:
        """Batch has no "started" event: a function writes a mark file, an
        executable's wrapper its pid file."""
        if self.wrapped is not None:
            return self.wrapped.started()
        return os.path.exists(self.base + ".started")

    def make(self, batch: Any) -> Any:
        """Batch's task for this entry; None when it cannot run (then it has ended already)."""
        handle = self.handle
        opts = batch.options(name=handle.uid)
        if self.wrapped is None:
            payload = functions.pack(handle)
            return None if payload is None else opts.function(functions.batch_main, payload, self.base + ".started")
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


def rank_layout(handle: TaskHandle) -> list[dict[str, Any]]:
    """One entry per rank of an executable: its ``process_template`` options
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
