"""rhapsody-py 0.6's ``raptor_config`` mapped onto this backend's raptor.

rhapsody-py describes raptor as ``{"masters": [{"ranks": 1, "workers": [{"ranks": N,
"worker_type": "DefaultWorker"}, ...]}]}`` and starts it with the pilot. Here one
raptor master runs per backend, with RHAPSODY's own worker class (it reports
calls whose process died, stops cancelled calls, captures output per task), so:

- exactly one master; its ``ranks`` must be 1;
- every entry of ``workers`` is one worker; a worker of ``ranks`` x
  ``cores_per_rank`` cores runs that many calls at once, as RP's default
  worker does; all workers must be the same size;
- ``worker_type`` may be RP's ``DefaultWorker`` (RHAPSODY's worker is one);
- custom ``executable`` / ``arguments`` / ``raptor_file`` / other worker classes
  cannot be honoured and raise `ValueError` naming the key;
- raptor starts with the pilot (``eager``), as rhapsody-py does.
"""

from __future__ import annotations

from typing import Any

_MASTER_KEYS = frozenset({"ranks", "workers"})
_WORKER_KEYS = frozenset({"ranks", "cores_per_rank", "worker_type"})
_WORKER_TYPES = frozenset({"DefaultWorker", "RhapsodyWorker"})


def _count(entry: dict[str, Any], key: str, where: str) -> int:
    value = entry.get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"raptor_config: {where} {key}= must be a positive int, got {value!r}")
    return value


def _check_keys(entry: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"raptor_config: {where} must be a dict, got {type(entry).__name__}")
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ValueError(
            f"raptor_config: {where} key(s) {', '.join(unknown)} cannot be honoured: RHAPSODY runs its own raptor master "
            f"and worker (allowed here: {', '.join(sorted(allowed))}); see docs/migrating.md"
        )
    return entry


def raptor_options(config: dict[str, Any]) -> dict[str, Any]:
    """The ``raptor=`` options (`RaptorOptions` fields) ``config`` describes;
    raises `ValueError` for what cannot be honoured."""
    if not isinstance(config, dict):
        raise TypeError(f"raptor_config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - {"masters"})
    if unknown:
        raise ValueError(f"raptor_config: unknown key(s) {', '.join(unknown)} (expected 'masters')")
    masters = config.get("masters")
    if not isinstance(masters, list) or len(masters) != 1:
        count = len(masters) if isinstance(masters, list) else type(masters).__name__
        raise ValueError(f"raptor_config: 'masters' must be a list of exactly one master (one raptor per backend), got {count}")
    master = _check_keys(masters[0], _MASTER_KEYS, "the master's")
    if _count(master, "ranks", "the master's") != 1:
        raise ValueError("raptor_config: the master's ranks= must be 1 (a raptor master is one process)")
    workers = master.get("workers")
    if not isinstance(workers, list) or not workers:
        raise ValueError("raptor_config: the master needs a non-empty 'workers' list")
    sizes = set()
    for n, worker in enumerate(workers):
        where = f"worker {n}'s"
        _check_keys(worker, _WORKER_KEYS, where)
        kind = worker.get("worker_type", "DefaultWorker")
        if kind not in _WORKER_TYPES:
            raise ValueError(f"raptor_config: {where} worker_type={kind!r} cannot be honoured (RHAPSODY's worker is RP's DefaultWorker)")
        sizes.add(_count(worker, "ranks", where) * _count(worker, "cores_per_rank", where))
    if len(sizes) != 1:
        raise ValueError(f"raptor_config: all workers must have the same ranks x cores_per_rank, got {sorted(sizes)}")
    return {"workers": len(workers), "cores_per_worker": sizes.pop(), "eager": True}
