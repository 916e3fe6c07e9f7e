"""The task model: what users build, what backends translate, what results land in."""

from __future__ import annotations

import asyncio
import difflib
import itertools
import os
import time
from collections.abc import Callable, Generator
from typing import Any, ClassVar, NoReturn

import attrs

from rhapsody.errors import TaskCanceledError, TaskExecutionError, TaskValidationError
from rhapsody.resources import Resources
from rhapsody.states import TaskState
from rhapsody.task_fields import FieldAccess
from rhapsody.task_lists import UNTOUCHED, LazyList, install, peek

# Cheap, readable, unique within a process; pid keeps two processes' journals apart.
_uid_counter = itertools.count()
_uid_prefix = f"task.{os.getpid():x}."


def new_uid() -> str:
    return f"{_uid_prefix}{next(_uid_counter):06d}"


def generated_uid(uid: str) -> bool:
    """Whether ``uid`` was made by `new_uid` in this process (not given by the user)."""
    return uid.startswith(_uid_prefix)


_ONE_CORE = Resources()  # frozen, so every task without a request can share it

# Fields are normalised in `_validate`, not by attrs converters: a converter is a
# Python call per field for every task, also when the default was taken. None
# given for a container means "none given" (the seed system accepted None).


# Fields a backend fills in; they are not part of the description and are never
# accepted from the user's constructor call.
RESULT_FIELDS = ("state", "stdout", "stderr", "exit_code", "return_value", "exception", "timestamps", "attempt", "attempt_errors", "worker")

_NEW = TaskState.NEW.value  # (an Enum's .value is a property: too slow for every construction)
_NEW_STATE = TaskState.NEW
_UNSET: Any = object()  # a keyword not given
#: task_backend_specific_kwargs keys core itself resolves for executables
LAUNCH_KEYS = frozenset({"cwd", "env", "shell"})


def _warn_unknown(uid: str, key: str, did_you_mean: str) -> None:
    from rhapsody.log import get_logger  # noqa: PLC0415 - only on this rare path: task.py stays free of structlog

    get_logger("rhapsody.task").warning("task.unknown_field", task=uid, field=key, did_you_mean=did_you_mean)


def _near_miss(key: str, known: frozenset[str]) -> str | None:
    """The known field ``key`` is probably a typo of (``argumets`` -> ``arguments``)."""
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
    return match[0] if match else None


class _Undescribed(frozenset[str]):
    """The ``init_fields`` of a class whose field tables are not made yet."""


_UNDESCRIBED = _Undescribed()
#: each task class's attrs slots, in order (``__getstate__``)
_SLOTS: dict[type, tuple[str, ...]] = {}


def _describe(cls: type[BaseTask]) -> tuple[str, ...]:
    """Make ``cls``'s field tables from its attrs fields: its slots, the
    constructor's keywords (``init_fields``), the public field names."""
    fields = attrs.fields(cls)
    _SLOTS[cls] = tuple(f.name for f in fields)
    cls.init_fields = frozenset(f.name for f in fields if f.init)
    cls.public_fields = tuple(f.name for f in fields if not f.name.startswith("_"))
    return _SLOTS[cls]


def settle(future: asyncio.Future[BaseTask], task: BaseTask) -> None:
    """Settle an ended task's future: resolved with the task if DONE or CANCELED (as
    in rhapsody-py); raising why if FAILED, so ``asyncio.gather`` fails fast."""
    if task.state is not TaskState.FAILED:
        future.set_result(task)
        return
    exc = task.exception
    if not isinstance(exc, Exception) or isinstance(exc, StopIteration):
        # SystemExit & co. would stop the awaiting event loop, and a future refuses
        # StopIteration: the awaiter gets a TaskExecutionError caused by it instead.
        wrapped = TaskExecutionError(task.uid, f"task {task.uid} failed" + (f": {exc!r}" if exc else ""), task.exit_code, task.stderr)
        wrapped.__cause__ = exc
        exc = wrapped
    future.set_exception(exc)
    # Marks the exception as seen: a failure nobody awaits is in task.state, not
    # an "exception was never retrieved" message at exit.
    future.exception()


# on_setattr=NO_OP: validation and conversion happen once, at construction;
# backends set result fields on the hot path and must not pay for them.
@attrs.define(kw_only=True, eq=False, init=False, slots=True, getstate_setstate=False, on_setattr=attrs.setters.NO_OP)
class BaseTask(FieldAccess):
    """Fields every task has. Read them as attributes or items: ``task.stdout``,
    ``task["stdout"]``, ``task.get("exit_code")``; ``dict(task)`` lists them all.

    Keywords that are no field of the task (``ComputeTask(..., name="x")``) are
    kept as extra fields, readable the same way; one that looks like a misspelt
    field (``argumets``) is kept too, with a warning naming the field. Tasks are
    equal, and hash, by ``uid``.
    """

    uid: str = attrs.field(factory=new_uid)
    backend: str | None = None
    timeout: float | None = None
    resources: Resources = _ONE_CORE
    task_backend_specific_kwargs: dict[str, Any] = attrs.field(factory=dict)
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: more attempts after a retryable failure (None: the backend's / session's default)
    retries: int | None = None
    #: exception types retried besides engine trouble (`BackendError`), e.g. ``(TaskTimeoutError,)``
    retry_on: tuple[type[BaseException], ...] = ()

    # -- results, filled in by the backend --
    state: TaskState = attrs.field(default=TaskState.NEW, init=False)
    stdout: str | None = attrs.field(default=None, init=False)
    stderr: str | None = attrs.field(default=None, init=False)
    exit_code: int | None = attrs.field(default=None, init=False)
    return_value: Any = attrs.field(default=None, init=False)
    exception: BaseException | None = attrs.field(default=None, init=False)
    timestamps: dict[str, float] = attrs.field(factory=dict, init=False)
    #: the attempt now running or last run (1 = the first; 0 = not submitted)
    attempt: int = attrs.field(default=0, init=False)
    #: the error of every earlier attempt that failed and was retried, in order
    attempt_errors: list[BaseException] = attrs.field(default=UNTOUCHED, init=False)  # a list once read (task_lists)
    #: where the engine ran the current (or last) attempt, as it reported it: e.g. a Dask worker
    #: address, "<host>/pid <n>"; None when the engine does not say (see TaskHandle.running)
    worker: str | None = attrs.field(default=None, init=False)

    # -- bookkeeping, never serialised --
    #: None until submitted; the future while it runs; once it ended, the loop it ended on (see `future`)
    _future: asyncio.Future[BaseTask] | asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False, repr=False)
    _origin: dict[str, Any] | None = attrs.field(default=None, init=False, repr=False)

    kind: ClassVar[str] = "task"
    #: the constructor's keywords (set per class below the class definitions)
    init_fields: ClassVar[frozenset[str]] = frozenset()
    #: the fields rhapsody-py's constructor took by position, in its order
    positional_fields: ClassVar[tuple[str, ...]] = ("uid", "backend")

    def __init__(self, *positional: Any, **fields: Any) -> None:
        if positional:
            self._by_position(positional, fields)
        if fields.keys() <= self.init_fields:  # the hot path: nothing extra
            self.__attrs_init__(**fields)  # type: ignore[attr-defined]
            return
        if self.init_fields is _UNDESCRIBED:  # the first task of a subclass whose fields attrs added late
            _describe(type(self))
        extra = {key: fields.pop(key) for key in fields.keys() - self.init_fields}
        self.__attrs_init__(**fields)  # type: ignore[attr-defined]
        self._keep_extra(extra)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A subclass (a user's too) gets its own field tables: with the parent's,
        # a field it adds would be taken for an unknown keyword and lost.
        super().__init_subclass__(**kwargs)
        if "__attrs_attrs__" in cls.__dict__:  # attrs made this class with its fields (slots=True)
            _describe(cls)
        else:  # attrs adds them after (slots=False), or this is no attrs class: at its first task
            cls.init_fields = _UNDESCRIBED

    def _by_position(self, values: tuple[Any, ...], fields: dict[str, Any]) -> None:
        names = self.positional_fields
        if len(values) > len(names):
            raise TypeError(f"{type(self).__name__}() takes at most {len(names)} positional arguments ({', '.join(names)})")
        for name, value in zip(names, values, strict=False):
            if name in fields:
                raise TypeError(f"{type(self).__name__}() got {name!r} both by position and by keyword")
            fields[name] = value

    def _keep_extra(self, extra: dict[str, Any]) -> None:
        for key in extra:
            if key in self.public_fields or key.startswith("_"):
                raise TypeError(f"{type(self).__name__}() got {key!r}, which is no description field: the backend fills it in")
            if key in LAUNCH_KEYS:  # honoured only inside task_backend_specific_kwargs, as in rhapsody-py
                _warn_unknown(self.uid, key, f"task_backend_specific_kwargs={{{key!r}: ...}}")
                continue
            like = _near_miss(key, self.init_fields)
            if like is not None:
                _warn_unknown(self.uid, key, like)
        self.__dict__.update(extra)

    def __attrs_post_init__(self) -> None:
        self._validate()
        self.timestamps[_NEW] = time.time()

    def validate(self) -> None:
        """Check the description again (after changing fields by hand); raises
        `TaskValidationError` naming the field."""
        self._validate()

    def _fail(self, field: str, problem: str) -> NoReturn:
        raise TaskValidationError(self.uid, field, problem)

    def _validate(self) -> None:
        if not isinstance(self.uid, str) or not self.uid:
            self._fail("uid", f"must be a non-empty string, got {self.uid!r}")
        if self.backend is not None and (not isinstance(self.backend, str) or not self.backend):
            self._fail("backend", f"must be a backend name or None, got {self.backend!r}")
        if self.timeout is not None and (
            isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not self.timeout > 0
        ):
            self._fail("timeout", f"must be a positive number of seconds or None, got {self.timeout!r}")
        if self.resources is not _ONE_CORE and not isinstance(self.resources, Resources):
            self.resources = self._resources_of(self.resources)
        if self.retry_on is None:
            self.retry_on = ()
        if self.retries is not None or self.retry_on:
            self._check_retry_fields()
        if type(self.task_backend_specific_kwargs) is not dict or type(self.metadata) is not dict:  # the common case, checked cheaply
            for name in ("task_backend_specific_kwargs", "metadata"):
                if not isinstance(getattr(self, name), dict):
                    self._fail(name, f"must be a dict, got {type(getattr(self, name)).__name__}")

    def _resources_of(self, value: Any) -> Resources:
        if value is None:
            return _ONE_CORE
        if isinstance(value, dict):
            try:
                return Resources(**value)
            except TaskValidationError as exc:
                self._fail(exc.field, exc.problem)
            except TypeError as exc:
                self._fail("resources", str(exc))
        self._fail("resources", f"must be a Resources or a dict, got {type(value).__name__}")

    def _check_retry_fields(self) -> None:
        from rhapsody.retry import check_retry_on  # noqa: PLC0415 - rare path

        if self.retries is not None and (isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0):
            self._fail("retries", f"must be an int >= 0 or None, got {self.retries!r}")
        try:
            self.retry_on = check_retry_on(self.retry_on)
        except TypeError as exc:
            self._fail("retry_on", str(exc))

    # A task copied to another process (pickled) is a snapshot: the future and the
    # submitter's dict belong to the process that submitted it.
    def __getstate__(self) -> dict[str, Any]:
        slots = _SLOTS.get(type(self)) or _describe(type(self))
        state = {**self._extras(), **{name: peek(self, name) for name in slots}}
        state["_future"] = state["_origin"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BaseTask) and other.uid == self.uid

    def __hash__(self) -> int:
        return hash(self.uid)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseTask:
        """A new task from a description (``dict(task)`` of another task, or a
        plain dict): an AITask if it has a ``prompt``, else a ComputeTask.
        Result fields in ``data`` are not carried over: the new task has not run."""
        kind: type[BaseTask] = AITask if data.get("prompt") is not None else ComputeTask
        if cls not in (BaseTask, kind):
            kind = cls
        skip = {*kind.public_fields} - kind.init_fields
        return kind(**{k: v for k, v in data.items() if k not in skip and k not in ("kind", "task_type")})

    @property
    def future(self) -> asyncio.Future[BaseTask] | None:
        """Settled when the task ends: resolved with the task if DONE or CANCELED,
        raising the task's exception if FAILED; None until submitted."""
        future = self._future
        if future is None or not isinstance(future, asyncio.AbstractEventLoop):
            return future
        # The task ended and its future was let go (TaskTracker._enter): a future that
        # resolves with its own task is a reference cycle, left for the cyclic collector
        # (3 us a task). Asked for now: one is made, settled as the first one was.
        made: asyncio.Future[BaseTask] = future.create_future()
        settle(made, self)
        self._future = made
        return made

    def bind_future(self, future: asyncio.Future[BaseTask]) -> None:
        """rhapsody-py's hook to give a task its future; RHAPSODY sets it on submission."""
        self._future = future

    @property
    def done(self) -> bool:
        return self.state.is_terminal

    # -- awaiting --
    def __await__(self) -> Generator[Any, None, BaseTask]:
        future = self._future
        if future is None:
            raise RuntimeError(f"task {self.uid} has not been submitted; submit it through a Session or a backend first")
        if isinstance(future, asyncio.AbstractEventLoop):  # it ended (see `future`)
            if self.state is TaskState.DONE:
                return self
            future = self.future
            assert future is not None
        yield from future.__await__()  # raises a FAILED task's exception itself
        return self.result()

    def result(self) -> BaseTask:
        """The task itself if it ended DONE; otherwise raise why it did not."""
        if self.state is TaskState.DONE:
            return self
        if self.state is TaskState.CANCELED:
            raise TaskCanceledError(self.uid)
        if self.state is TaskState.FAILED:
            if self.exception is not None:
                raise self.exception
            raise TaskExecutionError(self.uid, f"task {self.uid} failed", self.exit_code, self.stderr)
        raise RuntimeError(f"task {self.uid} is still {self.state}")


@attrs.define(kw_only=True, eq=False, init=False, slots=True, getstate_setstate=False, on_setattr=attrs.setters.NO_OP)
class ComputeTask(BaseTask):
    """An executable (``executable`` + ``arguments``) or a Python callable
    (``function`` + ``args`` / ``kwargs``, sync or ``async def``): exactly one."""

    executable: str | None = None
    function: Callable[..., Any] | None = None
    # the list fields are lists once read (see task_lists: most tasks never touch them)
    arguments: list[str] = UNTOUCHED
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    input_files: list[str] = UNTOUCHED
    output_files: list[str] = UNTOUCHED
    capture_stdio: bool = False

    kind: ClassVar[str] = "compute"
    positional_fields: ClassVar[tuple[str, ...]] = (
        "executable", "function", "arguments", "args", "kwargs", "uid", "input_files", "output_files", "capture_stdio",
    )  # fmt: skip

    def __init__(self, *positional: Any, function: Any = _UNSET, args: Any = _UNSET, kwargs: Any = None, **fields: Any) -> None:
        # The usual function task, ``ComputeTask(function=f, args=..., kwargs=...)``,
        # is built here in half the time attrs' generic ``__init__`` takes (a task
        # built per call is a large share of a one-at-a-time round trip). Every
        # field is set as that ``__init__`` sets it: tests/core/test_task.py compares the two.
        if positional or fields or function is None or function is _UNSET or type(self) is not ComputeTask or not callable(function):
            if function is not _UNSET:
                fields["function"] = function
            if args is not _UNSET:
                fields["args"] = args
            if kwargs is not None:
                fields["kwargs"] = kwargs
            BaseTask.__init__(self, *positional, **fields)
            return
        self.uid = new_uid()
        self.backend = self.timeout = self.retries = None
        self.resources = _ONE_CORE
        self.task_backend_specific_kwargs = {}
        self.metadata = {}
        self.retry_on = ()
        self.state = _NEW_STATE
        self.stdout = self.stderr = self.exit_code = self.return_value = self.exception = self.worker = None
        self.attempt = 0
        self.attempt_errors = self.arguments = self.input_files = self.output_files = UNTOUCHED
        self._future = self._origin = self.executable = None
        self.capture_stdio = False
        self.function = function
        self.args = () if args is _UNSET else args
        self.kwargs = {} if kwargs is None else kwargs
        if type(self.args) is not tuple:
            self._check_args()
        if kwargs is not None and (type(kwargs) is not dict or kwargs):
            self._check_kwargs()
        self.timestamps = {_NEW: time.time()}

    def _validate(self) -> None:
        BaseTask._validate(self)
        if (self.executable is None) == (self.function is None):
            self._fail("executable/function", "give exactly one of executable= or function=")
        if self.executable is not None and (not isinstance(self.executable, str) or not self.executable.strip()):
            self._fail("executable", f"must be a non-empty string, got {self.executable!r}")
        if self.function is not None and not callable(self.function):
            self._fail("function", f"must be callable, got {type(self.function).__name__}")
        arguments = _raw_arguments(self, None)  # (read raw: an untouched list field stays untouched)
        if arguments is not UNTOUCHED:
            self._check_arguments(arguments)
        if type(self.args) is not tuple:
            self._check_args()
        if self.kwargs is None:
            self.kwargs = {}
        elif type(self.kwargs) is not dict or self.kwargs:
            self._check_kwargs()
        if (self.args or self.kwargs) and self.executable is not None:
            self._fail("args/kwargs", "args= / kwargs= are for functions; give an executable arguments=")
        if _raw_input_files(self, None) is not UNTOUCHED or _raw_output_files(self, None) is not UNTOUCHED:
            self._check_paths()
        if not isinstance(self.capture_stdio, bool):
            self._fail("capture_stdio", f"must be a bool, got {self.capture_stdio!r}")

    def _check_args(self) -> None:
        if self.args is None:
            self.args = ()
        elif not isinstance(self.args, (tuple, list)):
            self._fail("args", f"must be a tuple or list, got {type(self.args).__name__}")
        self.args = tuple(self.args)

    def _check_kwargs(self) -> None:
        if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
            self._fail("kwargs", "must be a dict with string keys")

    def _check_arguments(self, arguments: Any) -> None:
        if arguments is None:
            _ARGUMENTS.slot.__set__(self, UNTOUCHED)
            return
        if isinstance(arguments, (str, bytes)) or not isinstance(arguments, (list, tuple)):
            self._fail("arguments", f"must be a list of strings, got {type(arguments).__name__}")
        if not arguments:  # an empty list or tuple given: reads as a new empty list, as always
            _ARGUMENTS.slot.__set__(self, UNTOUCHED)
            return
        self.arguments = [str(a) if isinstance(a, (int, float)) else a for a in arguments]
        if not all(isinstance(a, str) for a in self.arguments):
            self._fail("arguments", "every argument must be a string or a number")
        if self.function is not None:
            self._fail("arguments", "arguments= is for executables; give a function args= / kwargs=")

    def _check_paths(self) -> None:
        for field in (_INPUT_FILES, _OUTPUT_FILES):
            if field.raw(self) is None:
                field.slot.__set__(self, UNTOUCHED)
        for name, value in (("input_files", _INPUT_FILES.peek(self)), ("output_files", _OUTPUT_FILES.peek(self))):
            if not isinstance(value, (list, tuple)) or (value and not all(isinstance(p, (str, os.PathLike)) for p in value)):
                self._fail(name, "must be a list of paths")

    @property
    def is_function(self) -> bool:
        return self.function is not None


# (mypy: AITask's generated __attrs_init__ requires prompt=, BaseTask's does not)
@attrs.define(kw_only=True, eq=False, init=False, slots=True, getstate_setstate=False, on_setattr=attrs.setters.NO_OP)
class AITask(BaseTask):  # type: ignore[override]
    """An inference request (one prompt, or a list of them); the answer lands
    in ``response``, the backend's measurements in ``metrics``. The target is ``model``, ``inference_endpoint`` or, alone,
    the ``backend`` it is routed to."""

    prompt: str | list[str]
    model: str | None = None
    inference_endpoint: str | None = None
    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    #: the model's answer: one text for a str prompt, a list of texts (in prompt order) for a list
    response: Any = attrs.field(default=None, init=False)
    #: what the inference backend measured: tokens (prompt / completion / total), latency and time
    #: to first token in seconds, the endpoint; per request under ``requests`` for a list of prompts
    metrics: dict[str, Any] | None = attrs.field(default=None, init=False)

    kind: ClassVar[str] = "ai"
    positional_fields: ClassVar[tuple[str, ...]] = (
        "prompt", "model", "inference_endpoint", "system_prompt", "temperature", "max_tokens", "top_p", "top_k",
        "stop_sequences", "uid", "backend",
    )  # fmt: skip

    def _validate(self) -> None:
        BaseTask._validate(self)
        prompts = self.prompt if isinstance(self.prompt, list) else [self.prompt]
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            self._fail("prompt", "must be a non-empty string or a non-empty list of them")
        if self.model is None and self.inference_endpoint is None and self.backend is None:
            self._fail("model", "give model=, inference_endpoint= or the backend= to route it to")
        for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high):
                self._fail(name, f"must be a number in [{low}, {high}], got {value!r}")
        for name in ("max_tokens", "top_k"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                self._fail(name, f"must be a positive int, got {value!r}")


_describe(BaseTask)  # its subclasses were described as attrs made them

_LIST_FIELDS = {BaseTask: ("attempt_errors",), ComputeTask: ("arguments", "input_files", "output_files")}
for _cls, _names in _LIST_FIELDS.items():
    install(_cls, _names)
_ARGUMENTS: LazyList = ComputeTask.__dict__["arguments"]
_INPUT_FILES: LazyList = ComputeTask.__dict__["input_files"]
_OUTPUT_FILES: LazyList = ComputeTask.__dict__["output_files"]
# the slots' own C getters: `_validate` reads them for every task
_raw_arguments, _raw_input_files, _raw_output_files = (f.slot.__get__ for f in (_ARGUMENTS, _INPUT_FILES, _OUTPUT_FILES))
