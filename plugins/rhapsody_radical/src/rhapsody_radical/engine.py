"""RHAPSODY's engine contract on one RADICAL-Pilot pilot: executables become RP
tasks launched by the agent, Python functions raptor calls. RP reports from its
own threads; every report goes through the task's handle."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs

from rhapsody.engine.contract import EngineContext
from rhapsody.engine.handle import TaskHandle
from rhapsody.engine.process import preflight
from rhapsody.engine.sampling import LocalNodeSampler
from rhapsody.errors import BackendError
from rhapsody.resources import Capacity, NodeSample
from rhapsody.task import ComputeTask
from rhapsody_radical import descriptions, raptor_call
from rhapsody_radical.pilot_session import PilotSession

#: seconds beyond the pilot's own start timeout for opening the session
SESSION_SETUP = 120.0


@attrs.define
class RaptorOptions:
    workers: int = 1
    cores_per_worker: int = 1
    eager: bool = False


@attrs.define
class Submitted:
    """What the engine keeps of a task handed to RP (``handle.engine_data``)."""

    rp_uid: str
    is_function: bool
    stdout: Path | None = None  # an executable's output files
    stderr: Path | None = None
    capture: bool = False


class RadicalEngine:
    engine_name: ClassVar[str] = "radical_pilot"
    task_kinds: ClassVar[frozenset[str]] = frozenset({"compute"})
    accepted_keys: ClassVar[frozenset[str]] = descriptions.PASSED_ON
    stop_timeout = 180.0

    def __init__(self, pilot: PilotSession, raptor: RaptorOptions, pilot_timeout: float) -> None:
        self.pilot = pilot
        self.raptor_options = raptor
        self.pilot_timeout = pilot_timeout
        self.start_timeout = pilot_timeout + SESSION_SETUP
        self.swept: list[int] = []
        self._raptor: Any = None
        self._workers: set[str] = set()  # RP uids of the raptor workers
        self._raptor_lost: str | None = None  # why function tasks can no longer run here
        self._raptor_lock: asyncio.Lock | None = None
        self._in_rp: dict[str, TaskHandle] = {}  # RP uid -> handle, until RP reports it final
        self._in_rp_lock = threading.Lock()
        self._serial = itertools.count(1)
        self._stopping = False
        self._work_dir = Path.cwd()
        self._log: Any = None
        self._sampler: LocalNodeSampler | None = None
        self._where = ""  # task.worker of tasks on the pilot (set once it is active)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, context: EngineContext) -> None:
        self._log, self._work_dir = context.log, context.work_dir.absolute()
        self._raptor_lock = asyncio.Lock()
        base = self._work_dir / f"radical.{context.name}"
        await asyncio.to_thread(self.pilot.open, base, self.pilot_timeout, self._on_pilot_state, self._on_task_state)
        self._log.info("radical.pilot_active", sid=self.pilot.sid, pilot=self.pilot.pilot.uid, path=str(base))
        # The pilot and its host, as the resource samples name it. Not the slot: RP 1.103
        # sends a task's slots only with its final state, after RUNNING was reported.
        host = socket.gethostname() if self.pilot.local else str(self.pilot.description.get("resource") or "remote")
        self._where = f"{self.pilot.pilot.uid}@{host}"
        if self.raptor_options.eager:
            await self._ensure_raptor()

    def capacity(self) -> Capacity | None:
        return self.pilot.capacity()

    async def sample_resources(self) -> list[NodeSample]:
        """The pilot's node, when the pilot runs on this machine (a ``local.*``
        resource). A remote pilot is not sampled: nothing of ours runs there to ask."""
        if not self.pilot.local or self.pilot.pilot is None:
            return []
        if self._sampler is None:
            self._sampler = LocalNodeSampler(node_id=f"{self.pilot.pilot.uid}@{socket.gethostname()}")
        return self._sampler.sample()

    async def stop(self) -> None:
        self._stopping = True
        self.swept = await asyncio.to_thread(self.pilot.close, self._raptor)
        with self._in_rp_lock:
            self._in_rp.clear()
        if self.swept and self._log is not None:
            self._log.warning("radical.swept", sid=self.pilot.sid, pids=self.swept)

    async def _ensure_raptor(self) -> Any:
        assert self._raptor_lock is not None
        async with self._raptor_lock:
            if self._raptor is None:
                opts = self.raptor_options
                master, workers = await asyncio.to_thread(self.pilot.start_raptor, opts.workers, opts.cores_per_worker)
                self._raptor, self._workers = master, set(workers)
                self._log.info("radical.raptor_started", raptor=self._raptor.uid, workers=opts.workers)
            return self._raptor

    # ------------------------------------------------------------------ submit
    async def submit(self, handles: Sequence[TaskHandle]) -> None:
        if self.pilot.is_final():
            error = self.pilot.failure()
            for handle in handles:
                handle.failed(error)
            return
        executables = [h for h in handles if h.launch is not None]
        functions = [h for h in handles if h.launch is None]
        if executables:
            await asyncio.to_thread(self._submit_executables, executables)
        if functions and self._raptor_lost is not None:
            for handle in functions:
                handle.failed(
                    BackendError(
                        f"task {handle.uid}: {self._raptor_lost}; this backend runs no more function tasks (executables still run)"
                    )
                )
        elif functions:
            raptor = await self._ensure_raptor()
            await asyncio.to_thread(self._submit_functions, raptor, functions)

    def _rp_uid(self, handle: TaskHandle) -> str:
        # RP refuses a uid it has seen in this session: a new task may reuse a finished one's uid
        return f"{handle.uid}.{next(self._serial)}"

    def _submit_executables(self, handles: list[TaskHandle]) -> None:
        rp = self.pilot.rp
        assert self.pilot.base is not None
        batch: list[tuple[TaskHandle, Any]] = []
        for handle in handles:
            spec, task = handle.launch, handle.task
            assert spec is not None and isinstance(task, ComputeTask)
            # a local pilot shares this filesystem: the same 127/126 as every engine, before RP sees it
            failure = preflight(spec) if self.pilot.local else None
            if failure is not None:
                handle.finish(failure)
                continue
            rp_uid = self._rp_uid(handle)
            capture = spec.stdout_path is not None
            out = Path(spec.stdout_path) if spec.stdout_path is not None else self.pilot.base / "stdio" / f"{rp_uid}.out"
            err = Path(spec.stderr_path) if spec.stderr_path is not None else self.pilot.base / "stdio" / f"{rp_uid}.err"
            try:
                desc = rp.TaskDescription(descriptions.executable(rp_uid, task, spec, out, err))
                desc.verify()
            except Exception as exc:  # noqa: BLE001 - this task's description, not the batch's
                handle.failed(BackendError(f"task {handle.uid}: RADICAL-Pilot refused its description: {exc}"))
                continue
            handle.engine_data = Submitted(rp_uid, False, out, err, capture)
            batch.append((handle, desc))
        self._hand_to_rp(batch, self.pilot.tmgr.submit_tasks)

    def _submit_functions(self, raptor: Any, handles: list[TaskHandle]) -> None:
        rp = self.pilot.rp
        batch: list[tuple[TaskHandle, Any]] = []
        for handle in handles:
            task = handle.task
            assert isinstance(task, ComputeTask)
            if task.resources.ranks > 1:
                handle.failed(BackendError(f"task {handle.uid}: multi-rank functions need an MPI raptor worker; this backend starts none"))
                continue
            rp_uid = self._rp_uid(handle)
            try:
                desc = rp.TaskDescription(descriptions.function(rp_uid, task, raptor.uid, rp.TASK_FUNCTION))
                desc.verify()
            except Exception as exc:  # noqa: BLE001 - e.g. an argument that cannot be pickled: this task only
                handle.failed(exc if isinstance(exc, TypeError) else BackendError(f"task {handle.uid}: {exc}"))
                continue
            handle.engine_data = Submitted(rp_uid, True, capture=task.capture_stdio)
            batch.append((handle, desc))
        self._hand_to_rp(batch, raptor.submit_tasks)

    def _hand_to_rp(self, batch: list[tuple[TaskHandle, Any]], submit: Any) -> None:
        if not batch:
            return
        with self._in_rp_lock:  # before RP can report on them
            for handle, _ in batch:
                self._in_rp[handle.engine_data.rp_uid] = handle
        try:
            submit([desc for _, desc in batch])
        except BaseException:
            with self._in_rp_lock:
                for handle, _ in batch:
                    self._in_rp.pop(handle.engine_data.rp_uid, None)
            raise

    # ------------------------------------------------------------------ cancel
    async def cancel(self, handle: TaskHandle) -> bool:
        entry = handle.engine_data
        with self._in_rp_lock:
            if entry is None or entry.rp_uid not in self._in_rp:
                return False
        # a function already in a raptor worker is stopped by the worker (raptor_worker)
        await asyncio.to_thread(self.pilot.tmgr.cancel_tasks, [entry.rp_uid])
        return True

    # ------------------------------------------------------------------ events (RP threads)
    def _on_pilot_state(self, pilot: Any, state: str, *_: Any) -> None:
        rp = self.pilot.rp
        if state not in (rp.FAILED, rp.CANCELED, rp.DONE) or self._stopping:
            return
        error = self.pilot.failure(state)
        if self._log is not None:
            self._log.error("radical.pilot_ended", pilot=pilot.uid, state=state, error=str(error)[:300])
        with self._in_rp_lock:
            lost, self._in_rp = list(self._in_rp.values()), {}
        for handle in lost:
            handle.failed(error)

    def _on_task_state(self, rp_task: Any, state: str, *_: Any) -> None:
        rp = self.pilot.rp
        final = state in (rp.DONE, rp.FAILED, rp.CANCELED)
        if final and self._is_raptor(rp_task.uid):
            self._raptor_ended(rp_task, state)
            return
        with self._in_rp_lock:
            handle = self._in_rp.pop(rp_task.uid, None) if final else self._in_rp.get(rp_task.uid)
        if handle is None:
            return
        entry: Submitted = handle.engine_data
        try:
            if state == rp.AGENT_EXECUTING or (state == rp.AGENT_SCHEDULING and entry.is_function):
                # RP 1.103 publishes no executing state for raptor tasks: a
                # function counts as running once raptor has accepted it
                handle.running(f"{self._where}/raptor" if entry.is_function else self._where)
            elif final:
                self._ended(handle, entry, rp_task, state)
        except Exception as exc:  # noqa: BLE001 - never let a translation bug hang a task
            handle.failed(BackendError(f"task {handle.uid}: could not read RADICAL-Pilot's result ({type(exc).__name__}: {exc})"))

    def _is_raptor(self, uid: str) -> bool:
        raptor = self._raptor
        return uid in self._workers or (raptor is not None and uid == raptor.uid)

    def _raptor_ended(self, part: Any, state: str) -> None:
        """A raptor master or worker process is gone (killed, crashed): the
        calls it held will never report, and RP cannot tell which those were.
        Every function task still in raptor fails naming it; later tasks get a
        new worker (or, for the master, a new raptor)."""
        is_master = self._raptor is not None and part.uid == self._raptor.uid
        self._workers.discard(part.uid)
        if self._stopping or self.pilot.is_final():
            return
        what = "raptor master" if is_master else "raptor worker"
        why = f"{what} {part.uid} ended ({state}, exit code {part.exit_code}) while function tasks were in raptor"
        if self._log is not None:
            self._log.error("radical.raptor_ended", uid=part.uid, state=state, exit_code=part.exit_code)
        with self._in_rp_lock:
            lost = [h for h in self._in_rp.values() if h.engine_data.is_function]
            for handle in lost:
                del self._in_rp[handle.engine_data.rp_uid]
        then = "later function tasks fail" if is_master else "a new worker runs later tasks"
        for handle in lost:
            handle.lost(f"{why}; {then}")
        orphans: list[str] = []
        if is_master:
            # A second raptor in the same pilot did not reliably start on RP 1.103
            # (seen in CI: the next call waited for ever), so later function
            # tasks fail at once with the reason; the master's workers go.
            self._raptor_lost = f"raptor master {part.uid} ended ({state}, exit code {part.exit_code})"
            orphans, self._raptor, self._workers = sorted(self._workers), None, set()
        lost_uids = [h.engine_data.rp_uid for h in lost]
        threading.Thread(target=self._recover_raptor, args=(lost_uids + orphans, not is_master), daemon=True).start()

    def _recover_raptor(self, stale: list[str], add_worker: bool) -> None:
        try:
            if stale:  # calls no worker took yet must not run after their tasks failed; orphaned workers must go
                self.pilot.tmgr.cancel_tasks(stale)
            if add_worker and self._raptor is not None:
                self._workers.update(self.pilot.add_workers(self._raptor, 1, self.raptor_options.cores_per_worker))
        except Exception as exc:  # noqa: BLE001 - an RP thread: log; later tasks wait for the remaining workers
            if self._log is not None:
                self._log.error("radical.raptor_recovery_failed", error=f"{type(exc).__name__}: {exc}")

    def _ended(self, handle: TaskHandle, entry: Submitted, rp_task: Any, state: str) -> None:
        rp = self.pilot.rp
        reason = str(rp_task.exception or "")
        if "pilot died" in reason or self.pilot.is_final():
            handle.failed(self.pilot.failure())
        elif state == rp.CANCELED:
            handle.canceled()
        elif entry.is_function:
            self._function_ended(handle, entry, rp_task)
        else:
            self._executable_ended(handle, entry, rp_task, state, reason)

    def _executable_ended(self, handle: TaskHandle, entry: Submitted, rp_task: Any, state: str, reason: str) -> None:
        assert entry.stdout is not None and entry.stderr is not None
        if entry.capture:
            out, err = str(entry.stdout), str(entry.stderr)
        else:  # RP keeps only the last 1 KiB of a task's output: read the files
            out, err = _read(entry.stdout, rp_task.stdout), _read(entry.stderr, rp_task.stderr)
        code = rp_task.exit_code
        if state == self.pilot.rp.DONE or code not in (None, 0):
            handle.done(exit_code=code if code is not None else 0, stdout=out, stderr=err)
            return
        message = (
            f"task {handle.uid}: RADICAL-Pilot failed {handle.launch.program if handle.launch else 'it'!r}: {reason or 'no reason given'}"
        )
        handle.failed(BackendError(message), stdout=out, stderr=rp_task.exception_detail or err)

    def _function_ended(self, handle: TaskHandle, entry: Submitted, rp_task: Any) -> None:
        out, err = rp_task.stdout or "", rp_task.stderr or ""
        value = rp_task.return_value
        if isinstance(value, str) and value:
            outcome = raptor_call.decode_outcome(value)
            # what the function printed was captured per call (rhapsody.engine.capture)
            # and travels in the outcome; a failure's stderr already ends with its traceback
            out = (outcome.stdout or "") + out
            err = (outcome.stderr or "") + err if outcome.stderr is not None else err + (outcome.traceback or "")
            if entry.capture:
                out, err = self._write_stdio(handle.uid, out, err)
            if outcome.error is None:
                handle.done(outcome.value, stdout=out, stderr=err)
            else:
                handle.failed(outcome.error, stdout=out, stderr=err or None)
            return
        if entry.capture:
            out, err = self._write_stdio(handle.uid, out, err)
        # no outcome: the call never ran to its end (its process died, raptor failed it)
        why = (rp_task.stderr or "").strip() or str(rp_task.exception or "") or "no reason given"
        handle.lost(why, stdout=out, stderr=err or why)

    def _write_stdio(self, uid: str, out: str, err: str) -> tuple[str, str]:
        paths = self._work_dir / f"{uid}.stdout", self._work_dir / f"{uid}.stderr"
        paths[0].write_text(out)
        paths[1].write_text(err)
        return str(paths[0]), str(paths[1])


def _read(path: Path, fallback: str | None) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return fallback or ""
