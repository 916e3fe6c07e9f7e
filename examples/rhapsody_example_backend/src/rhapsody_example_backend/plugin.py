from rhapsody import BackendRecord, hookimpl


@hookimpl
def rhapsody_register_backends() -> list[BackendRecord]:
    return [
        BackendRecord(
            name="asyncio_inline",
            backend_class="rhapsody_example_backend.backend:InlineBackend",
            summary="each task an asyncio task; functions in threads (example)",
        )
    ]
