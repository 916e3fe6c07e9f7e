"""Entry point ``concurrent``: light on purpose, it imports no engine."""

from rhapsody import BackendRecord, hookimpl


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="concurrent",
            backend_class="rhapsody_concurrent.backend:ConcurrentExecutionBackend",
            summary="local thread/process pool and subprocesses (the default)",
        )
    ]
