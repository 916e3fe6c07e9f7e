"""Resource samples of every node of the Dragon runtime, the same for the
three Dragon engines (telemetry polls them through ``sample_resources``).

At the first sample, one sampler process (`rhapsody_dragon.node_sampler_process`)
is started on each node of ``System()``, placed there by a host-name
``Policy``. A round puts its number in every sampler's inbox and collects the
answers from one shared outbox until all came or `ANSWER_TIMEOUT` passed: a
node that does not answer is left out of that round (a warning when it goes
quiet, once, and an info line when it answers again); a sampler found dead
is replaced after the round, at most `MAX_RESTARTS` times per node. The
engine's ``stop`` stops and joins them. They are Dragon processes: if the
program dies without stopping them, they go with its runtime.

Samplers are placed by Dragon's host names (``Node.hostname``); the samples'
node ids are the hosts' own names (``socket.gethostname()`` there), the host
part of ``task.worker`` (``<host>/pid ...``, ``<host>/puid ...``). On a
one-node runtime Dragon calls its node ``localhost``.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from typing import Any, ClassVar

from rhapsody.resources import NodeSample
from rhapsody_dragon import node_sampler_process
from rhapsody_dragon.runtime import bounded

#: seconds a round waits for the nodes' answers
ANSWER_TIMEOUT = 5.0
#: seconds starting the sampler processes (all nodes) may take
START_TIMEOUT = 120.0
#: seconds stopping them may take
STOP_TIMEOUT = 60.0
#: seconds a sampler gets to end after the stop message, and again after a kill
JOIN_PATIENCE = 5.0
#: how often a node's sampler that died is replaced before the node is given up
MAX_RESTARTS = 3
#: seconds between non-blocking reads of the outbox: first, and at most
POLL_MIN, POLL_MAX = 0.001, 0.05


class _Sampler:
    """One node's sampler process and its inbox."""

    def __init__(self, placed_on: str, proc: Any, inbox: Any, restarts: int) -> None:
        self.placed_on, self.proc, self.inbox, self.restarts = placed_on, proc, inbox, restarts
        self.pid: int | None = None  # as the process itself reports it
        self.host: str | None = None  # the host's own name, from its first sample
        self.quiet = False  # left out of a round (and logged): logged again when it answers


def node_hostnames() -> list[str]:
    """The host names of the runtime's nodes (run attached to the runtime)."""
    from dragon.native.machine import Node, System  # noqa: PLC0415

    return [Node(h_uid).hostname for h_uid in System().nodes]


class NodeSamplers:
    """One engine's sampler processes, one per node. Blocking methods: the
    engine calls them through `bounded`. One lock serialises them, so a round
    abandoned at its deadline finishes before the next one starts."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._lock = threading.Lock()
        self._samplers: dict[str, _Sampler] = {}
        self._given_up: set[str] = set()
        self._outbox: Any = None
        self._round = 0
        self._closed = False
        self.complete = False  # a sampler on every node (or given up): start() has nothing to do

    def start(self) -> None:
        """Start a sampler on each node that has none yet (a start that failed
        half-way is completed by the next call)."""
        from dragon.native.queue import Queue  # noqa: PLC0415

        with self._lock:
            if self._closed:
                return
            hosts = node_hostnames()
            if self._outbox is None:
                self._outbox = Queue(maxsize=max(64, 4 * len(hosts)))
            for host in hosts:
                if host in self._samplers or host in self._given_up:
                    continue
                sampler = self._spawn(host, restarts=0)
                if self._closed:  # stopped meanwhile (it gave up waiting for this start): not this one too
                    _stop(sampler, self._log)
                    return
                self._samplers[host] = sampler
            self.complete = True

    def _spawn(self, host: str, restarts: int) -> _Sampler:
        from dragon.infrastructure.policy import Policy  # noqa: PLC0415
        from dragon.native.process import Process  # noqa: PLC0415
        from dragon.native.queue import Queue  # noqa: PLC0415

        inbox = Queue(maxsize=16)
        policy = Policy(placement=Policy.Placement.HOST_NAME, host_name=host)
        proc = Process(target=node_sampler_process.serve, args=(inbox, self._outbox, host), policy=policy)
        proc.start()
        return _Sampler(host, proc, inbox, restarts)

    def sample_round(self, wait: float) -> list[NodeSample]:
        """One sample per node that answers within ``wait`` seconds (plus a
        sample per GPU where NVML answers)."""
        with self._lock:
            if self._closed or self._outbox is None:
                return []
            self._round += 1
            asked = self._ask(self._round)
            answers = self._collect(self._round, asked, wait)
            for sampler in list(self._samplers.values()):  # the unasked too (a full inbox): dead ones are replaced
                if sampler.placed_on not in answers:
                    self._note_silence(sampler, wait)
            return [sample for samples in answers.values() for sample in samples]

    def _ask(self, number: int) -> dict[str, _Sampler]:
        asked = {}
        for sampler in list(self._samplers.values()):
            try:
                sampler.inbox.put(number, block=False)
            except Exception as exc:  # noqa: BLE001 - a full inbox: it has not read the last requests
                self._quiet(sampler, "node_sampler.not_reading", error=type(exc).__name__)
                continue
            asked[sampler.placed_on] = sampler
        return asked

    def _collect(self, number: int, asked: dict[str, _Sampler], wait: float) -> dict[str, list[NodeSample]]:
        """Answers to round ``number`` until every asked node answered or
        ``wait`` passed. Non-blocking reads with sleeps: Dragon's timed gets
        busy-wait holding the GIL. Answers to earlier rounds are dropped."""
        answers: dict[str, list[NodeSample]] = {}
        deadline = time.monotonic() + wait
        delay = POLL_MIN
        while len(answers) < len(asked) and time.monotonic() < deadline:
            try:
                number_, placed_on, pid, samples = self._outbox.get(block=False)
            except queue.Empty:
                time.sleep(delay)
                delay = min(2 * delay, POLL_MAX)
                continue
            sampler = asked.get(placed_on)
            if number_ != number or sampler is None:
                continue
            if isinstance(samples, str):  # psutil failed there: the node stays out of this round
                self._quiet(sampler, "node_sampler.failed", error=samples)
                answers[placed_on] = []
                continue
            self._answered(sampler, pid, samples)
            answers[placed_on] = samples
        return answers

    def _answered(self, sampler: _Sampler, pid: int, samples: list[NodeSample]) -> None:
        if sampler.pid is None:
            sampler.host = samples[0].node_id if samples else None
            self._log.info("node_sampler.ready", **_names(sampler), pid=pid)
        elif sampler.quiet:
            self._log.info("node_sampler.answering", **_names(sampler), pid=pid)
        sampler.pid, sampler.quiet = pid, False

    def _note_silence(self, sampler: _Sampler, wait: float) -> None:
        """A node that did not answer: its sampler died (replace it) or is slow."""
        try:
            alive = bool(sampler.proc.is_alive)
        except Exception:  # noqa: BLE001 - the runtime cannot tell: treat it as gone
            alive = False
        if alive:
            self._quiet(sampler, "node_sampler.no_answer", waited=wait)
            return
        self._log.warning("node_sampler.lost", **_names(sampler), pid=sampler.pid, exit_code=_returncode(sampler.proc))
        self._replace(sampler)

    def _quiet(self, sampler: _Sampler, event: str, **fields: Any) -> None:
        if not sampler.quiet:
            self._log.warning(event, **_names(sampler), pid=sampler.pid, **fields)
            sampler.quiet = True

    def _replace(self, sampler: _Sampler) -> None:
        del self._samplers[sampler.placed_on]
        _end(sampler, self._log)
        if sampler.restarts >= MAX_RESTARTS:
            self._given_up.add(sampler.placed_on)
            self._log.warning("node_sampler.given_up", **_names(sampler), restarts=sampler.restarts)
            return
        try:
            self._samplers[sampler.placed_on] = self._spawn(sampler.placed_on, sampler.restarts + 1)
        except Exception as exc:  # noqa: BLE001 - the node stays out; the next round's start() tries again
            self.complete = False
            self._log.warning("node_sampler.restart_failed", **_names(sampler), error=f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """Stop every sampler (a stop message, then a kill after `JOIN_PATIENCE`)
        and destroy the queues. Waits for a round still running."""
        locked = self._lock.acquire(timeout=STOP_TIMEOUT / 2)
        try:
            self._closed = True
            samplers, self._samplers = list(self._samplers.values()), {}
            for sampler in samplers:
                _ask_to_stop(sampler)
            for sampler in samplers:
                _end(sampler, self._log)
            outbox, self._outbox = self._outbox, None
            _destroy(outbox)
        finally:
            if locked:
                self._lock.release()


def _ask_to_stop(sampler: _Sampler) -> None:
    try:
        sampler.inbox.put(None, timeout=2)
    except Exception:  # noqa: BLE001 - a stuck or dead sampler is killed in _end
        pass


def _stop(sampler: _Sampler, log: Any) -> None:
    _ask_to_stop(sampler)
    _end(sampler, log)


def _end(sampler: _Sampler, log: Any) -> None:
    """Join ``sampler``'s process, killing it if it does not end in time; destroy its inbox."""
    try:
        if sampler.proc.join(timeout=JOIN_PATIENCE) is None:
            sampler.proc.kill()
            sampler.proc.join(timeout=JOIN_PATIENCE)
    except Exception as exc:  # noqa: BLE001 - gone with the runtime, or already reaped
        log.debug("node_sampler.join_failed", **_names(sampler), error=type(exc).__name__)
    _destroy(sampler.inbox)


def _names(sampler: _Sampler) -> dict[str, str]:
    """How log lines name a sampler's node: the host's own name once known, and Dragon's."""
    return {"node": sampler.host or sampler.placed_on, "dragon_host": sampler.placed_on}


def _destroy(q: Any) -> None:
    if q is None:
        return
    try:
        q.destroy()
    except Exception:  # noqa: BLE001 - already gone with the runtime
        pass


def _returncode(proc: Any) -> int | None:
    try:
        code = proc.returncode
    except Exception:  # noqa: BLE001
        return None
    return code if isinstance(code, int) else None


class SamplesEachNode:
    """An engine's ``sample_resources``: one sample per node of the Dragon
    runtime, each read on its node by a sampler process. The engine sets
    ``_log`` when it starts and calls `_stop_node_samplers` when it stops."""

    engine_name: ClassVar[str]
    _log: Any
    _node_samplers: NodeSamplers | None = None

    async def sample_resources(self) -> list[NodeSample]:
        label = f"{self.engine_name} backend"
        if self._node_samplers is None:
            self._node_samplers = NodeSamplers(self._log)  # set first: stop() ends what a failed start left
        samplers = self._node_samplers
        if not samplers.complete:
            await bounded(samplers.start, START_TIMEOUT, label, "sampling step starting the node samplers")
        round_ = functools.partial(samplers.sample_round, ANSWER_TIMEOUT)
        result: list[NodeSample] = await bounded(round_, ANSWER_TIMEOUT + START_TIMEOUT, label, "sampling step one round")
        return result

    async def _stop_node_samplers(self) -> None:
        """Stop the samplers; never raises, so the engine's own stop goes on
        (a sampler left by a failed stop still ends with the runtime)."""
        samplers, self._node_samplers = self._node_samplers, None
        if samplers is None:
            return
        try:
            await bounded(samplers.stop, STOP_TIMEOUT, f"{self.engine_name} backend", "stop step node samplers")
        except Exception as exc:  # noqa: BLE001 - logged; the engine's stop continues
            self._log.warning("node_sampler.stop_failed", error=f"{type(exc).__name__}: {exc}")
