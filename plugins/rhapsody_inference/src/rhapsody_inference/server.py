"""A language-model server the backend owns: started with a command given as a
parameter, ready when its ``/v1/models`` answers, restarted once if it dies,
stopped (process group and port) with the backend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx

from rhapsody.errors import BackendError
from rhapsody_inference.endpoints import Endpoint


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class ManagedServer:
    """``command``: the server's argv; ``{host}`` and ``{port}`` in it are
    replaced by the address chosen (``port=None``: a free one). The same code
    starts ``python -m llama_cpp.server`` here and ``vllm serve`` on a GPU node.

    ``ready_timeout``: seconds to wait for ``GET {url}/models`` to answer 200;
    ``restarts``: how often a server that died on its own is started again;
    ``model``, ``chat``, ``concurrency``: the `Endpoint` it becomes."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        model: str | None = None,
        chat: bool = False,
        concurrency: int = 4,
        ready_timeout: float = 180.0,
        restarts: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        if not command or not all(isinstance(part, str) for part in command):
            raise ValueError(f"a managed server's command is a non-empty list of strings, got {command!r}")
        self.command, self.host, self.port = list(command), host, port
        self.model, self.chat, self.concurrency = model, chat, concurrency
        self.ready_timeout, self.restarts_allowed, self.env = ready_timeout, restarts, env or {}
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.log_path: Path | None = None
        self.death: str | None = None  # why it is gone for good
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._log_file: IO[bytes] | None = None
        self.up = asyncio.Event()  # set while it answers; cleared from its death until it is ready again
        self.log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def endpoint(self) -> Endpoint:
        return Endpoint(self.url, model=self.model, chat=self.chat, concurrency=self.concurrency)

    def argv(self) -> list[str]:
        return [part.replace("{host}", self.host).replace("{port}", str(self.port)) for part in self.command]

    # ------------------------------------------------------------------ lifecycle
    async def start(self, work_dir: Path, log: Any) -> None:
        """Start it and wait until it answers; raise a `BackendError` naming the
        step, the seconds waited and the end of its log if it does not."""
        self.log = log
        if self.port is None:
            self.port = free_port(self.host)
        work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = work_dir / f"server-{self.port}.log"
        await self._launch()
        self._watch = asyncio.ensure_future(self._watch_process())

    async def _launch(self) -> None:
        assert self.log_path is not None
        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - open for the server's whole life
        self.process = await asyncio.create_subprocess_exec(
            *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=self._log_file, stderr=self._log_file,
            start_new_session=True, env={**os.environ, **self.env},
        )  # fmt: skip
        self.log.info("server.started", pid=self.process.pid, url=self.url, argv=self.argv())
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=5.0) as http:
            while time.monotonic() - t0 < self.ready_timeout:
                if self.process is None or self.process.returncode is not None:
                    code = None if self.process is None else self.process.returncode
                    raise BackendError(f"managed server {self.url}: exited with code {code} before it was ready{self._log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/models")).status_code == 200:
                        self.up.set()
                        self.log.info("server.ready", url=self.url, seconds=round(time.monotonic() - t0, 2))
                        return
                await asyncio.sleep(0.2)
        await self._terminate()
        raise BackendError(
            f"managed server {self.url}: not ready within {self.ready_timeout:g} s (waited {time.monotonic() - t0:.1f} s for GET /v1/models){self._log_tail()}"
        )

    async def _watch_process(self) -> None:
        """Restart the server when it dies on its own, `restarts` times at most."""
        try:
            while not self._stopping and await self._restart_after_death():
                pass
        finally:
            self.up.set()  # wake whoever waits for it: they find `death` set, or that it stopped

    async def _restart_after_death(self) -> bool:
        """Wait for the process to end; True if it was started again."""
        assert self.process is not None
        code = await self.process.wait()
        self.up.clear()
        _signal_group(self.process.pid, signal.SIGKILL)  # whatever it left running in its group
        if self._stopping:
            return False
        if self.restarts >= self.restarts_allowed:
            self.death = (
                f"managed server {self.url} exited with code {code} and was already restarted {self.restarts} time(s){self._log_tail()}"
            )
            self.log.error("server.dead", url=self.url, exit_code=code)
            return False
        self.restarts += 1
        self.log.warning("server.died", url=self.url, exit_code=code, restart=self.restarts)
        try:
            await self._wait_port_free()
            await self._launch()
        except BackendError as exc:
            self.death = f"managed server {self.url} exited with code {code}; restarting it failed: {exc}"
            self.log.error("server.restart_failed", url=self.url, error=str(exc))
            return False
        return True

    async def wait_up(self) -> None:
        """After a dropped connection: wait while a restart is under way (up to
        ``ready_timeout``); return at once if it is up or gone for good."""
        if self.death is None and not self._stopping:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.up.wait(), self.ready_timeout)

    async def _wait_port_free(self, seconds: float = 30.0) -> None:
        assert self.port is not None
        t0 = time.monotonic()
        while port_in_use(self.host, self.port):
            if time.monotonic() - t0 > seconds:
                raise BackendError(f"managed server {self.url}: port {self.port} still in use {seconds:g} s after the server died")
            await asyncio.sleep(0.1)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop it and everything it started; wait until its port is free."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._terminate(grace)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.port is not None:
            with contextlib.suppress(BackendError):
                await self._wait_port_free(grace)

    async def _terminate(self, grace: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            _signal_group(process.pid, signal.SIGKILL)
            await asyncio.wait_for(process.wait(), grace)
        _signal_group(process.pid, signal.SIGKILL)  # anything it left running in its group
        if self.log is not None:
            self.log.info("server.stopped", url=self.url, exit_code=process.returncode)

    def _log_tail(self, size: int = 1500) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - size))
            tail = fh.read().decode("utf-8", errors="replace").strip()
        return f"; end of its log ({self.log_path}):\n{tail}" if tail else ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def llama_cpp_server(
    model_path: str | os.PathLike[str], alias: str, *, n_ctx: int = 512, threads: int = 1, **options: Any
) -> ManagedServer:
    """A `ManagedServer` running llama-cpp-python's OpenAI-compatible server on
    CPU (``pip install "rhapsody-inference[llama-cpp]"``). One request at a time
    is what it serves well; ``--interrupt_requests false`` keeps concurrent
    streams from cutting each other off."""
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", os.fspath(model_path), "--model_alias", alias,
        "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--host", "{host}", "--port", "{port}",
        "--interrupt_requests", "false",
    ]  # fmt: skip
    options.setdefault("model", alias)
    options.setdefault("chat", True)
    options.setdefault("concurrency", 1)
    return ManagedServer(command, **options)
