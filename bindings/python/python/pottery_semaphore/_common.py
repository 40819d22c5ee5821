"""What the sync and async semaphores share: argument checks, options, error translation."""

from __future__ import annotations

import contextlib
import decimal
import math
import numbers
import operator
import os
import threading
import warnings
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Set, TypeVar, Union

from . import exceptions as exc
from ._masters import master_urls
from ._native import pottery_semaphore_ffi as _ffi

T = TypeVar("T")

#: The semaphore an empty ``key`` names (the original library's default key was ``""``).
DEFAULT_KEY = "default"
_I64 = (-(2**63), 2**63 - 1)


class Permit(NamedTuple):
    """A permit you hold. ``token`` is its fencing token: unique, and increasing with every
    grant of the semaphore, so a resource can refuse a holder older than one it has seen. (With
    several masters it increases per slot, its low 16 bits: compare tokens of one slot only.)"""

    token: int
    #: Lease deadline in Redis server time, milliseconds since the Unix epoch.
    deadline_ms: int
    #: Milliseconds left on the lease when Redis answered.
    ttl_ms: int


class Holder(NamedTuple):
    """A permit held by any holder of the semaphore."""

    token: int
    holder: str
    ttl_ms: int


class Waiter(NamedTuple):
    """A queued acquire; waiters are served in this order."""

    id: int
    n: int
    holder: str


class Status(NamedTuple):
    """Capacity, availability, holders and the queue of a semaphore."""

    initial: int
    capacity: int
    available: int
    holders: List[Holder]
    waiters: List[Waiter]


def permit(p: Any) -> Permit:
    return Permit(p.token, p.deadline_ms, p.ttl_ms)


def status(s: Any) -> Status:
    return Status(
        s.initial,
        s.capacity,
        s.available,
        [Holder(h.token, h.holder, h.ttl_ms) for h in s.holders],
        [Waiter(w.id, w.n, w.holder) for w in s.waiters],
    )


def integer(name: str, value: Any) -> int:
    """``value`` as an int (anything with ``__index__``), clamped to 64 bits: the native layer
    then rejects it with its own message."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None
    return min(max(v, _I64[0]), _I64[1])


#: Permits one call takes or gives back at most (core/src/validate.rs).
MAX_PER_CALL = 10_000


def check_count(n: int) -> int:
    """The native layer's check of a count (same messages), for the calls that must refuse a
    bad one before they reach Redis: an AIOSemaphore's first call opens it, which an unreachable
    Redis fails first; a release hands kept permits back before the native call."""
    if n < 1:
        raise exc.InvalidArgumentError("n must be >= 1")
    if n > MAX_PER_CALL:
        raise exc.InvalidArgumentError(f"n must be <= {MAX_PER_CALL}")
    return n


def check_timeout(seconds: Optional[float]) -> Optional[float]:
    """The native layer's check of a time-out from ``timeout_seconds`` (same message, numbers
    written as Rust writes them), for AIOSemaphore's first call (see ``check_count``)."""
    if seconds is not None and not seconds >= 0:
        raise exc.InvalidArgumentError(f"timeout must be a non-negative number of seconds, got {_as_rust_shows(seconds)}")
    return seconds


def _as_rust_shows(x: float) -> str:
    """``x`` as Rust's ``{}`` writes an f64: the shortest digits that read back as ``x``, never
    with an exponent, no ``.0`` on a whole number; ``NaN``, ``inf``."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    shown = format(decimal.Decimal(repr(x)), "f")
    return shown.rstrip("0").rstrip(".") if "." in shown else shown


def check_value(value: Any) -> int:
    v = integer("value", value)
    if v < 0:
        raise exc.InvalidArgumentError("Semaphore value must be non-negative")
    return v


def _to_float(x: Any) -> float:
    """``float(x)``, with numbers beyond any float (a huge int, Fraction or Decimal) as ±inf, and
    a signalling NaN ``Decimal`` (which ``float`` refuses) as NaN."""
    if isinstance(x, decimal.Decimal) and x.is_nan():
        return math.nan
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def timeout_seconds(blocking: bool, timeout: Any) -> Optional[float]:
    """``-1`` and ``None`` wait forever; a non-blocking call ignores ``timeout`` as the original
    library did. NaN and other negatives reach the native layer, which rejects them."""
    if not blocking or timeout is None:
        return None
    # A number, not text ("5") or a flag (True), which float() would take as seconds.
    if isinstance(timeout, bool) or not isinstance(timeout, (numbers.Real, decimal.Decimal)):
        raise TypeError(f"timeout must be a number, not {type(timeout).__name__}")
    t = _to_float(timeout)  # first: comparing a signalling NaN Decimal raises
    if t == -1:
        return None
    if math.isinf(t) and t > 0:
        return None
    return t


# The largest millisecond count the native layer takes (an i64); it rejects anything near it.
_MAX_MS = 2**63 - 1


def milliseconds(seconds: Any, what: str) -> int:
    """``seconds`` (a positive real number: int, float, Fraction, Decimal...) as whole
    milliseconds, at least 1; values beyond the native range are clamped to it, so the native
    layer's range check reports them."""
    if isinstance(seconds, bool) or not isinstance(seconds, (numbers.Real, decimal.Decimal)):
        raise exc.InvalidArgumentError(f"{what} must be a positive number of seconds, got {seconds!r}")
    s = _to_float(seconds)
    if math.isnan(s) or s <= 0:
        raise exc.InvalidArgumentError(f"{what} must be a positive number of seconds, got {seconds!r}")
    return _MAX_MS if math.isinf(s) else min(max(1, round(s * 1000)), _MAX_MS)


class ReplicaAck(NamedTuple):
    """How many replicas must acknowledge each change, within ``timeout`` seconds (below 4);
    ``aof=True`` waits for their AOF fsync (``WAITAOF``, Redis 7.2+ and Valkey)."""

    replicas: int = 1
    timeout: float = 0.1
    aof: bool = False

    def _native(self) -> Any:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or not 0 <= self.replicas < 2**32:
            raise exc.InvalidArgumentError(f"replicas must be a whole number >= 0, got {self.replicas!r}")
        timeout_ms = milliseconds(self.timeout, "the replica timeout")
        return _ffi.ReplicaAck(replicas=self.replicas, timeout_ms=timeout_ms, aof=bool(self.aof))


def _check_text(text: str, what: str) -> None:
    """Text crosses to the native layer as UTF-8: a lone surrogate (``os.fsdecode`` of bytes that
    are not UTF-8) has no encoding and is the caller's invalid argument, not an encoding error."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise exc.InvalidArgumentError(f"{what} is not valid Unicode text (a lone surrogate)") from None


def options(
    *,
    value: Any,
    key: Any,
    masters: Iterable[Any],
    bounded: Any,
    lease: Any,
    guard_fresh_server: bool,
    raise_on_redis_errors: bool = False,
    cluster: bool = False,
    replica_ack: Optional["ReplicaAck"] = None,
) -> Any:
    v = check_value(value)
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    _check_text(key, f"key {key!r}")
    # Several masters: each permit is a slot held on a majority of them (Redlock mode).
    urls = master_urls(masters)
    for url in urls:
        _check_text(url, "a master's URL")  # not shown: it may carry a password
    lease_ms = milliseconds(lease, "lease")
    return _ffi.SemaphoreOptions(
        url=urls[0],
        more_masters=urls[1:],
        raise_on_redis_errors=bool(raise_on_redis_errors),
        key=key or DEFAULT_KEY,
        value=v,
        bounded=bool(bounded),
        lease_ms=lease_ms,
        guard_fresh_server=bool(guard_fresh_server),
        cluster=bool(cluster),
        replica_ack=None if replica_ack is None else replica_ack._native(),
    )


def translate(e: BaseException) -> BaseException:
    """A native error as the Python exception a caller expects."""
    E = _ffi.SemaphoreError
    if isinstance(e, E.Bounded):
        return exc.BoundedSemaphoreError(e.key, e.current, e.initial)
    if isinstance(e, E.InvalidArgument):
        return exc.InvalidArgumentError(e.message)
    if isinstance(e, E.Quorum):
        return exc.QuorumIsImpossible(f"no quorum: {e.message}")
    if isinstance(e, E.Unreachable):
        return exc.RedisUnavailableError(f"Redis is unreachable: {e.message}")
    if isinstance(e, E.Auth):
        return exc.AuthenticationError(f"Redis refused the credentials: {e.message}")
    if isinstance(e, E.WrongType):
        return exc.WrongTypeError(e.message)
    if isinstance(e, E.NotReplicated):
        return exc.NotReplicatedError(f"not replicated: {e.message}")
    if isinstance(e, E.Redis):
        return exc.RedisReplyError(e.message)
    if isinstance(e, E.Cancelled):
        return exc.AcquireInterruptedError("a signal interrupted the wait for permits")
    # A panic comes as uniffi's InternalError, its text as its argument.
    return exc.SemaphoreRuntimeError(getattr(e, "message", None) or (f"{type(e).__name__}: {e}" if str(e) else type(e).__name__))


NATIVE_ERRORS = (_ffi.SemaphoreError, _ffi.InternalError)


#: How often ``despite_signals`` runs a step again: bounded, so that a step failing for good
#: (not a signal's handler) cannot loop forever.
_STEP_ATTEMPTS = 64


def despite_signals(step: Callable[[], None]) -> None:
    """Runs ``step``, a clean-up that is harmless to repeat, to its end even when signals'
    handlers raise meanwhile (Python runs them between any two of its steps, also inside an
    ``except`` block that is giving a grant back): again after each such exception, the last
    of which is raised once the step is done, the ones before it as its context. (Not one that
    lands before the first attempt begins: nothing in Python can close that.)"""
    raised: Optional[BaseException] = None
    for _ in range(_STEP_ATTEMPTS):
        try:
            step()
            break
        except BaseException as e:  # noqa: BLE001 - a handler's exception, raised below
            if raised is not None and e is not raised:
                e.__context__ = raised  # else only the caller's exception: the ones between vanish
            raised = e
    if raised is not None:
        raise raised


def call(fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except NATIVE_ERRORS as e:
        raise translate(e) from None


class OpenBlocks:
    """The permits each ``with`` block took, from entering it to leaving it. A block is found
    again by the frame running the ``with`` statement, which stays the same when a generator holding
    it is resumed on another thread or closed by another task; else (``contextlib.ExitStack``
    enters and leaves from frames of its own) by the exit stack that entered it and now leaves
    it, innermost first; else by who entered it, a thread or an asyncio task: its innermost
    block that no exit stack entered and that is not running (whose frame is not on the stack
    of the one leaving: a wrapper's ``__exit__`` calling ours), else its one block not running,
    else its innermost; else it is the one block whose owner has ended, if there is exactly
    one. Never any other block: releasing a block still running would let one holder too many
    in."""

    class _Block:
        __slots__ = ("frame", "owner", "stack", "tokens")

        def __init__(self, frame: Any, owner: Any, tokens: List[int]) -> None:
            self.frame, self.owner, self.tokens = frame, owner, tokens
            self.stack = _exit_stack(frame, _ENTERING)

    def __init__(self) -> None:
        # Reentrant: a signal's handler may run a `with` block of its own on a thread that is
        # inside enter() or leave() (Python runs handlers between any two steps).
        self._lock = threading.RLock()
        self._open: List["OpenBlocks._Block"] = []  # in the order entered

    def enter(self, frame: Any, owner: Any, tokens: List[int], entered: List[Any]) -> None:
        """Records a block entered. It goes into ``entered`` first: a caller that a signal's
        handler interrupts (it raises) between any two steps finds there what to discard."""
        block = OpenBlocks._Block(frame, owner, tokens)
        entered.append(block)
        with self._lock:
            self._open.append(block)

    def discard(self, block: "OpenBlocks._Block") -> None:
        """Forgets a block that never began (its ``__enter__`` raised after recording it)."""
        with self._lock:
            if block in self._open:
                self._open.remove(block)

    def leave(self, frame: Any, owner: Any, left: List[Any]) -> Union[List[int], None, "_NotEntered"]:
        """The tokens of the block being left, which is forgotten; None when it cannot be told
        which; ``NOT_ENTERED`` when no block is open at all (the permit was taken by
        ``acquire()``, and ``__exit__`` is its release, as in the original). The block goes into
        ``left`` first (see ``enter``). (Until the block releases them, the host takes its
        permits last in a ``release()`` beside: they were granted spared.)"""
        with self._lock:
            if not self._open:
                return NOT_ENTERED
            # A copy: a handler that runs a `with` block of its own meanwhile changes the list.
            blocks = list(self._open)
            block = next((b for b in reversed(blocks) if b.frame is frame), None)
            stack = None if block is not None else _exit_stack(frame, _LEAVING)
            if stack is not None:
                # A stack leaves its blocks last in, first out.
                block = next((b for b in reversed(blocks) if b.stack is stack), None)
            if block is None:
                # The owner's innermost block not still running under the one leaving (an
                # ExitStack closed inside a `with`) that no stack entered (a wrapper's); else,
                # of blocks stacks entered, the one (two: stacks moved by pop_all() cannot be
                # told apart, and releasing the wrong one could let one holder too many in);
                # else its innermost (a frame that called __enter__ itself and handed __exit__
                # to ExitStack.push).
                owned = [b for b in reversed(blocks) if b.owner is owner]
                running = _frames_below(frame)
                idle = [b for b in owned if b.frame not in running]
                plain = [b for b in idle if b.stack is None]
                if plain:
                    block = plain[0]
                elif idle:
                    block = idle[0] if len(idle) == 1 else None
                else:
                    block = owned[0] if owned else None
            if block is None:
                ended = [b for b in blocks if _ended(b.owner)]
                block = ended[0] if len(ended) == 1 else None
            if block is None:
                return None
            left.append(block)
            if block in self._open:
                self._open.remove(block)
            return block.tokens


class _NotEntered:
    """What ``OpenBlocks.leave`` answers when no block is open."""


NOT_ENTERED = _NotEntered()


# The exit stack methods that call a context manager's __enter__ (from their own frame) and
# __exit__ (from theirs, or through a wrapper of one frame on some versions).
_ENTERING = (("enter_context", "enter_async_context"), 1)
_LEAVING = (("__exit__", "__aexit__"), 2)


def _exit_stack(frame: Any, methods: Any) -> Any:
    """The ``contextlib`` exit stack whose entering or leaving method (``methods``: names, and
    how many frames up from ``frame`` to look) runs ``frame`` or calls it, or None. Other
    methods of an exit stack subclass (a plain ``with`` in one) do not count."""
    names, depth = methods
    for _ in range(depth):
        if frame is None:
            return None
        if frame.f_code.co_name in names:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, (contextlib.ExitStack, contextlib.AsyncExitStack)):
                return candidate
        frame = frame.f_back
    return None


def _frames_below(frame: Any) -> Set[Any]:
    """``frame`` and every frame it was called from: the ``with`` blocks of those still run."""
    frames = set()
    while frame is not None:
        frames.add(frame)
        frame = frame.f_back
    return frames


def _ended(owner: Any) -> bool:
    """Whether a thread or an asyncio task has finished (``None``, outside a task: never)."""
    if isinstance(owner, threading.Thread):
        return not owner.is_alive()
    done = getattr(owner, "done", None)
    return bool(done()) if done is not None else False


def unknown_block_left() -> None:
    """A ``with`` block was left that cannot be told from the others still open (entered and
    left through helpers on different threads or tasks): releasing any of theirs could let one
    holder too many in, so none is; the permit stays held until a ``release()``."""
    warnings.warn(
        "pottery_semaphore: cannot tell which `with` block of this semaphore was left; its permit "
        "stays held until a release()",
        RuntimeWarning,
        stacklevel=3,
    )


class NotCopyable:
    """For the objects that hold a native handle, which exactly one Python object may free: a
    deep copy (``deepcopy``, a dataclass's ``asdict``) would copy the handle and free it twice (a
    crash), and a pickle could not carry it. Both are refused; a shallow copy is the object
    itself (one handle, one record of its ``with`` blocks). To share one, pass the object; for
    another holder, open another with the same key."""

    def _refuse(self) -> TypeError:
        return TypeError(f"a {type(self).__name__} cannot be deep-copied or pickled: share it, or open another with the same key")

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: Any) -> Any:
        raise self._refuse()

    def __reduce__(self) -> Any:
        raise self._refuse()


class ForkGuard:
    """Native handles live on the threads of the process that opened them; a forked child must
    open its own."""

    def __init__(self) -> None:
        self._pid = os.getpid()

    def forked(self) -> bool:
        """Whether this is a child forked since (another process than the one that made it)."""
        return os.getpid() != self._pid

    def check(self) -> None:
        if self.forked():
            raise exc.SemaphoreError(
                "this semaphore was opened in another process (before fork()); create a new one here"
            )
