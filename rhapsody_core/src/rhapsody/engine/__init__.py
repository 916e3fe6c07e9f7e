"""The plugin side of RHAPSODY: the `Engine` contract a backend plugin
implements, the `TaskHandle` it reports through, and the engine-side helpers
that launch executables (`process`) and call functions (`calls`) the same way
on every engine.

The helper modules need only the standard library and cloudpickle, so engine
workers (Dask workers, Dragon processes, pilot agents) import them cheaply.
"""

from rhapsody.engine.calls import CallControl, call_function, call_packed, pack_call
from rhapsody.engine.contract import Engine, EngineContext
from rhapsody.engine.handle import TaskHandle
from rhapsody.engine.host import core_count, gpu_count
from rhapsody.engine.launch import LaunchSpec
from rhapsody.engine.outcome import Outcome

__all__ = [
    "CallControl",
    "Engine",
    "EngineContext",
    "LaunchSpec",
    "Outcome",
    "TaskHandle",
    "call_function",
    "call_packed",
    "core_count",
    "gpu_count",
    "pack_call",
]
