"""RP 1.103's raptor ``DefaultWorker`` with what RHAPSODY needs fixed. RP loads
this file by path (``raptor_file`` / ``raptor_class`` of the worker task).

For every task RP's worker forks a dispatch process, which forks the process
that runs the call. When that call process ends without sending a result
(``os._exit``, a signal, a kill on cancel) RP never reports the task and never
frees its core: the task, and every later one once the cores are gone, stays
RUNNING forever. Here instead:

- a call process that ended without a result fails its task, naming this
  worker, the process and how it ended; its core is freed, later tasks run;
- a ``cancel_tasks`` request drops a task still waiting in this worker and
  stops the process group of one it runs (RP's worker ignores the request);
- the call runs in a process group of its own, so what it started goes with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Any

import radical.utils as ru
from radical.pilot.raptor.worker_default import DefaultWorker
from radical.pilot.task_description import TASK_FUNC, TASK_METH

import rhapsody_radical.raptor_call  # noqa: F401 - loaded once here, not again in every forked call

_REMEMBER = 10_000  # cancelled uids kept (cancels are broadcast, most are not ours)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class RhapsodyWorker(DefaultWorker):  # type: ignore[misc]
    def __init__(self, raptor_id: str) -> None:
        # before the base class subscribes to control messages that use them
        self._rh_lock = threading.Lock()
        self._rh_canceled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._rh_dispatch: dict[str, int] = {}  # task uid -> pid of its dispatch process
        super().__init__(raptor_id)

    # ---------------------------------------------------------------- worker process
    def _control_cb(self, topic: str, msg: dict[str, Any]) -> Any:
        if msg.get("cmd") == "cancel_tasks":
            self._rh_cancel(list((msg.get("arg") or {}).get("uids") or []))
        return super()._control_cb(topic, msg)

    def _rh_cancel(self, uids: list[str]) -> None:
        with self._rh_lock:
            for uid in uids:
                self._rh_canceled[uid] = None
            while len(self._rh_canceled) > _REMEMBER:
                self._rh_canceled.popitem(last=False)
            pids = [self._rh_dispatch[uid] for uid in uids if uid in self._rh_dispatch]
        for pid in pids:  # the dispatch process stops its call and reports the task
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _rh_is_canceled(self, uid: str) -> bool:
        with self._rh_lock:
            return uid in self._rh_canceled

    def _request_cb(self, tasks: Any) -> None:
        for task in ru.as_list(tasks):
            task["worker"] = self._uid
            uid = task["uid"]
            try:
                allocated = False
                while not self._rh_is_canceled(uid) and not (allocated := self._alloc(task)):
                    time.sleep(0.01)
                if not allocated:
                    self._rh_send(task, "canceled before it started", "CancelledError('canceled')")
                    continue
                proc = mp.Process(target=self._dispatch, args=(task, {**self._task_env, "RP_TASK_ID": uid}))
                with self._plock:
                    proc.start()
                    self._pool[proc.pid] = proc
                with self._rh_lock:
                    self._rh_dispatch[uid] = proc.pid or 0
                if self._rh_is_canceled(uid):  # cancelled while it was being started
                    self._rh_cancel([uid])
            except Exception as exc:  # noqa: BLE001 - as RP's worker: the task fails, the worker goes on
                self._log.exception("request failed")
                with contextlib.suppress(Exception):
                    self._dealloc(task)
                self._rh_send(task, f"request failed: {exc}", repr(exc))

    def _rh_send(self, task: dict[str, Any], stderr: str, exception: str) -> None:
        task.update(stdout=None, stderr=stderr, exit_code=1, return_value=None, exception=exception, exception_detail=None)
        self._res_put.put(task)

    def _result_cb(self, result: list[Any]) -> None:
        with self._rh_lock:
            self._rh_dispatch.pop(result[0]["uid"], None)
        super()._result_cb(result)

    # ---------------------------------------------------------------- dispatch process
    def _dispatch(self, task: dict[str, Any], env: dict[str, str]) -> None:
        task["pid"] = os.getpid()
        os.environ.update(env)
        os.environ.update({k: str(v) for k, v in (task.get("environment") or {}).items()})
        call: list[mp.Process] = []
        stopped: list[int] = []

        def on_term(signum: int, frame: Any) -> None:
            stopped.append(signum)
            for proc in call:
                if proc.pid:
                    _kill_group(proc.pid)

        signal.signal(signal.SIGTERM, on_term)
        lock, sent = mp.Lock(), mp.Event()
        timeout = task["description"].get("timeout") or None
        try:
            proc = mp.Process(target=self._rh_call, args=(task, lock, sent), daemon=True)
            call.append(proc)
            proc.start()
            assert proc.pid is not None
            if stopped:
                _kill_group(proc.pid)
            proc.join(timeout=timeout)
            with lock:
                if proc.is_alive():
                    _kill_group(proc.pid)
                    proc.join()
                    self._rh_fail(task, f"timeout (>{timeout})", 'TimeoutError("task timed out")')
                elif not sent.is_set():
                    self._rh_fail(task, *self._rh_lost(task, proc, bool(stopped)))
        except Exception as exc:  # noqa: BLE001 - the task fails with the reason, the core is freed
            self._rh_fail(task, f"dispatch failed: {exc}", repr(exc))
        finally:
            self._result_queue.close()
            self._result_queue.join_thread()
            sys.exit(1)

    def _rh_lost(self, task: dict[str, Any], proc: mp.Process, stopped: bool) -> tuple[str, str]:
        if stopped:
            return "canceled while it ran", "CancelledError('canceled')"
        why = (
            f"raptor worker {self._uid}: the process running task {task['uid']} (pid {proc.pid}) "
            f"{_how_it_ended(proc.exitcode)} before returning a result"
        )
        return why, f"WorkerProcessDied({why!r})"

    def _rh_fail(self, task: dict[str, Any], stderr: str, exception: str) -> None:
        self._result_queue.put([task, None, stderr, 1, None, [exception, None]])

    # ---------------------------------------------------------------- call process
    def _rh_call(self, task: dict[str, Any], lock: Any, sent: Any) -> None:
        os.setpgrp()
        import setproctitle  # noqa: PLC0415 - as RP: only the call process renames itself

        setproctitle.setproctitle(f"rp.dispatch.{task['uid']}")
        gpus = task["slots"][0]["gpus"]
        if gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
        out: Any = None
        err: Any = None
        val: Any = None
        ret: Any = 1
        exc: Any = [None, None]
        try:
            ru.rec_makedir(task["task_sandbox_path"])
            os.chdir(task["task_sandbox_path"])
            mode = task["description"]["mode"]
            dispatcher = self.get_dispatcher(mode)
            if mode in (TASK_METH, TASK_FUNC):
                out, err, ret, val, exc = asyncio.run(dispatcher(task))
            else:
                out, err, ret, val, exc = dispatcher(task)
        except Exception as e:  # noqa: BLE001 - as RP's worker: reported as the task's exception
            exc = [repr(e), "\n".join(ru.get_exception_trace())]
        with lock:
            self._result_queue.put([task, out, err, ret, val, exc])
            self._result_queue.close()
            self._result_queue.join_thread()  # in the pipe before we say it was sent
            sent.set()
