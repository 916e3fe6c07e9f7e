"""How a task ended, as the engine side saw it: one encoding for every engine.

An `Outcome` is what the engine-side helpers return (`call_function`,
`rhapsody.engine.process.Command.wait`) and what `TaskHandle.finish` turns into
a task state. It crosses process boundaries as bytes (`pack` / `unpack`), and
packing never fails: a value or exception that cannot be pickled is replaced by
an error that says so. Standard library and cloudpickle only: this module is
imported inside engine workers.
"""

from __future__ import annotations

from typing import Any

import cloudpickle


class Outcome:
    """``error`` is None when the task succeeded. For a function: ``value`` is
    its return value, or ``error`` its exception and ``traceback`` the text.
    For an executable: ``exit_code``, ``stdout``, ``stderr`` (text, or the paths
    of the capture files)."""

    __slots__ = ("error", "exit_code", "stderr", "stdout", "traceback", "value")

    def __init__(
        self,
        value: Any = None,
        *,
        error: BaseException | None = None,
        traceback: str | None = None,
        exit_code: int | None = None,
        stdout: str | None = None,
        stderr: str | None = None,
    ) -> None:
        self.value, self.error, self.traceback = value, error, traceback
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code in (None, 0)

    def __repr__(self) -> str:
        if self.error is not None:
            return f"Outcome(error={self.error!r})"
        if self.exit_code is not None:
            return f"Outcome(exit_code={self.exit_code})"
        return f"Outcome(value={self.value!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.value, self.error, self.traceback, self.exit_code, self.stdout, self.stderr))

    def pack(self) -> bytes:
        """cloudpickle bytes; an unpicklable value or error becomes a
        picklable error naming the problem, so the task still ends."""
        try:
            data: bytes = cloudpickle.dumps(self)
            return data
        except Exception as exc:  # noqa: BLE001 - whatever pickling raised, the task must end
            problem = exc
        if self.error is not None:
            stand_in: BaseException = RuntimeError(f"{type(self.error).__name__}: {self.error} (the exception itself cannot be pickled)")
        else:
            stand_in = TypeError(f"the return value ({type(self.value).__name__}) cannot be sent back: {problem}")
        data = cloudpickle.dumps(
            Outcome(error=stand_in, traceback=self.traceback, exit_code=self.exit_code, stdout=self.stdout, stderr=self.stderr)
        )
        return data

    @staticmethod
    def unpack(data: bytes) -> Outcome:
        outcome = cloudpickle.loads(data)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"expected a packed Outcome, got {type(outcome).__name__}")
        return outcome


def _rebuild(value: Any, error: Any, traceback: Any, exit_code: Any, stdout: Any, stderr: Any) -> Outcome:
    return Outcome(value, error=error, traceback=traceback, exit_code=exit_code, stdout=stdout, stderr=stderr)
