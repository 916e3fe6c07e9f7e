"""The launch specification of an executable task, resolved once by core.

Core turns every executable `ComputeTask` into a `LaunchSpec` before its engine
sees it: the argv (after the one shell rule), environment overrides as strings,
working directory, capture paths, rank count and timeout. Engines launch from
the spec, never from the task's raw fields, so every engine agrees on them.
Standard library only: engine workers import it.
"""

from __future__ import annotations

import os
from typing import Any

RANK_ENV = "RHAPSODY_RANK"
RANKS_ENV = "RHAPSODY_RANKS"


class LaunchSpec:
    """How to start one executable task (all of its ranks).

    ``argv``: the program and its arguments (``["/bin/sh", "-c", line]`` for a
    command line). ``env``: variables set over the launching process's own
    environment. ``cwd``: working directory, None for the engine's default.
    ``stdout_path`` / ``stderr_path``: files to write output to
    (``capture_stdio``), None to return it as text. ``ranks``: processes to
    start; each sees ``RHAPSODY_RANK`` and ``RHAPSODY_RANKS`` when there are
    several. ``timeout``: seconds, for engines with a native deadline (core
    enforces it either way).
    """

    __slots__ = ("argv", "cwd", "env", "ranks", "stderr_path", "stdout_path", "timeout", "uid")

    def __init__(
        self,
        uid: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdout_path: str | None = None,
        stderr_path: str | None = None,
        ranks: int = 1,
        timeout: float | None = None,
    ) -> None:
        self.uid, self.argv, self.env, self.cwd = uid, argv, env or {}, cwd
        self.stdout_path, self.stderr_path = stdout_path, stderr_path
        self.ranks, self.timeout = ranks, timeout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.uid, self.argv, self.env, self.cwd, self.stdout_path, self.stderr_path, self.ranks, self.timeout))

    def __repr__(self) -> str:  # never the environment's values: they may hold secrets
        return f"LaunchSpec(uid={self.uid!r}, argv={self.argv!r}, cwd={self.cwd!r}, ranks={self.ranks}, env_keys={sorted(self.env)})"

    @property
    def program(self) -> str:
        """What to name in messages: the command line for a shell, else argv[0]."""
        if len(self.argv) == 3 and self.argv[:2] == ["/bin/sh", "-c"]:
            return self.argv[2]
        return self.argv[0]

    def rank_env(self, rank: int) -> dict[str, str]:
        """The variables one rank gets over the launching environment."""
        if self.ranks == 1:
            return self.env
        return {**self.env, RANK_ENV: str(rank), RANKS_ENV: str(self.ranks)}

    def environ(self, rank: int = 0) -> dict[str, str] | None:
        """The whole environment of one rank, or None when it is the launching
        process's own unchanged (cheaper to hand to ``Popen``)."""
        extra = self.rank_env(rank)
        return {**os.environ, **extra} if extra else None


def _rebuild(
    uid: str, argv: list[str], env: dict[str, str], cwd: str | None, out: str | None, err: str | None, ranks: int, timeout: float | None
) -> LaunchSpec:
    return LaunchSpec(uid, argv, env=env, cwd=cwd, stdout_path=out, stderr_path=err, ranks=ranks, timeout=timeout)
