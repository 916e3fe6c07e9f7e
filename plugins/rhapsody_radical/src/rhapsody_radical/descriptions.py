"""RHAPSODY task -> RADICAL-Pilot ``TaskDescription`` (as a dict): the
translation table. Executables from their resolved `LaunchSpec`, functions as
a raptor call. Nothing here imports radical.pilot."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rhapsody.engine.launch import RANK_ENV, RANKS_ENV, LaunchSpec
from rhapsody.task import ComputeTask
from rhapsody_radical import loopback, raptor_call

#: ``task_backend_specific_kwargs`` keys handed to RP's TaskDescription as given
PASSED_ON = frozenset(
    {
        "pre_exec",
        "post_exec",
        "pre_launch",
        "post_launch",
        "named_env",
        "sandbox",
        "tags",
        "priority",
        "gpu_type",
        "threading_type",
        "use_mpi",
        "ranks_per_node",
        "lfs_per_rank",
        "input_staging",
        "output_staging",
        "stage_on_error",
        "partition",
    }
)


def resources(task: ComputeTask) -> dict[str, Any]:
    res = task.resources
    desc: dict[str, Any] = {"ranks": res.ranks, "cores_per_rank": res.cores_per_rank}
    if res.gpus_per_rank:
        desc["gpus_per_rank"] = res.gpus_per_rank
    if res.memory is not None:
        desc["mem_per_rank"] = math.ceil(res.memory / res.ranks / 2**20)  # RP counts MB per rank
    return desc


def passed_on(task: ComputeTask) -> dict[str, Any]:
    return {k: v for k, v in task.task_backend_specific_kwargs.items() if k in PASSED_ON}


# RP's rank script waits for the program, not for what the program left running
# in the background; every engine stops that once the program exits. Run as
# post_exec of a 1-rank task (in the rank script): everything in the task's
# process group (RP gives each task its own) except RP's own scripts. Shell
# builtins only, reading /proc/<pid>/stat (its process group is the third field
# after the command name's closing parenthesis): a command substitution or a
# pipeline would put processes of this very check into the group, which then
# found them, signalled them and slept 0.2 s on every task.
#
# Reading every process's stat file costs bash ~150 us a process, more under
# load: 35 ms a task next to an idle pilot (120 processes), 100-200 ms among
# 500, while the task still holds its cores (RP's own part of a /bin/true task
# is ~100 ms: 1.2-1.7x raw RP on 200 of them). But whatever the program left was
# created after it started, and Linux hands out pids in increasing order until
# the counter wraps at pid_max; /proc/loadavg's last field is the last pid
# handed out. `MARK_PIDS`, run before the program (first pre_exec), notes it
# and the time; the sweep then reads only the processes whose pids were handed
# out since: above the mark and not above the counter now (older processes
# from before the counter's last wrap sit above it). It reads them all when
# the counter went backwards (wrapped), when the task ran 2 s or more (a full
# wrap unnoticed would take pid_max >= 32768 forks in that time; the whole
# scan is then a small part of the task's time), when /proc counts pids in
# another namespace than this shell ($$), or when no mark was taken.
# Without /proc neither may fail: RP ends a task whose pre_exec fails, and the
# loop's arithmetic would end the script on the glob's literal text.
MARK_PIDS = "rh_n=; { read -r rh_x rh_x rh_x rh_x rh_n < /proc/loadavg; read -r rh_t rh_x < /proc/uptime; } 2>/dev/null; true"
STOP_LEFTOVERS = (
    "if [ -r /proc/loadavg ] && [ -r /proc/$$/stat ]; then "
    "read -r rh_x < /proc/$$/stat; rh_i=${rh_x%% *}; "
    "rh_x=${rh_x##*) }; rh_x=${rh_x#* }; rh_x=${rh_x#* }; rh_g=${rh_x%% *}; rh_l=; rh_a=0; rh_b=2147483647; "
    "read -r rh_x rh_x rh_x rh_x rh_m < /proc/loadavg; read -r rh_u rh_x < /proc/uptime; "
    'if [ -n "${rh_n:-}" ] && [ "$rh_i" = "$$" ] && [ "$rh_m" -ge "$rh_n" ] && [ $((${rh_u%%.*} - ${rh_t%%.*})) -lt 2 ]; '
    "then rh_a=$rh_n rh_b=$rh_m; fi; "
    "for rh_s in /proc/[0-9]*; do "
    'rh_p=${rh_s#/proc/}; case $((rh_p > rh_a && rh_p <= rh_b)) in 0) continue ;; esac; read -r rh_x < "$rh_s/stat" || continue; '
    "rh_x=${rh_x##*) }; rh_x=${rh_x#* }; rh_x=${rh_x#* }; "
    'if [ "${rh_x%% *}" = "$rh_g" ] && [ "$rh_p" != "$rh_g" ] && [ "$rh_p" != "$PPID" ] && [ "$rh_p" != "$$" ]; '
    # one redirection for the whole loop: one per process cost as much as the rest of it
    'then rh_l="$rh_l $rh_p"; fi; done 2>/dev/null; '
    'if [ -n "$rh_l" ]; then kill -TERM $rh_l 2>/dev/null; sleep 0.2; kill -KILL $rh_l 2>/dev/null; fi; fi; true'
)


def executable(rp_uid: str, task: ComputeTask, spec: LaunchSpec, stdout: Path, stderr: Path) -> dict[str, Any]:
    """RP writes a task's command line into a bash script as ``executable``
    followed by each argument in double quotes, where ``$`` and backquotes
    are still expanded; its ``environment`` values likewise. So the whole argv
    goes into ``executable`` quoted for the shell, the environment and working
    directory into ``pre_exec`` as quoted exports and a ``cd``, after removing
    what only RP's own processes may see (`loopback`)."""
    sweep = spec.ranks == 1
    # the mark before anything of the task's own runs; then the task's own PYTHONPATH, if it sets one, wins
    setup = [MARK_PIDS] if sweep else []
    setup.append(loopback.SCRUB_SHELL)
    setup += [f"export {key}={shlex.quote(value)}" for key, value in spec.env.items()]
    if spec.ranks > 1:  # RP numbers the ranks of a task itself
        setup.append(f'export {RANK_ENV}="$RP_RANK" {RANKS_ENV}="$RP_RANKS"')
    if spec.cwd is not None:
        setup.append(f"cd {shlex.quote(spec.cwd)}")
    extra = passed_on(task)
    post = [STOP_LEFTOVERS] if sweep else []
    return {
        **resources(task),
        **extra,
        "uid": rp_uid,
        "name": task.uid,
        "executable": shlex.join(spec.argv),
        "arguments": [],
        "stdout": str(stdout),
        "stderr": str(stderr),
        "pre_exec": setup + list(extra.get("pre_exec") or []),
        "post_exec": list(extra.get("post_exec") or []) + post,
    }


def function(rp_uid: str, task: ComputeTask, raptor_id: str, mode: str) -> dict[str, Any]:
    """Raises `TypeError` naming the task and the part of its call that cannot be pickled."""
    assert task.function is not None
    call = raptor_call.encode_call(task.function, tuple(task.args), dict(task.kwargs), task.uid)
    return {
        **resources(task),
        **passed_on(task),
        "uid": rp_uid,
        "name": task.uid,
        "mode": mode,
        "function": _python_task(raptor_call.run, call),
        "raptor_id": raptor_id,
    }


def _python_task(fn: Callable[..., Any], call: str) -> str:
    import radical.pilot as rp  # noqa: PLC0415 - loaded by the engine already; kept out of module import

    return str(rp.PythonTask(fn, (call,), {}))
