"""The synchronous semaphore."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import Any, Iterable, List, Optional

from . import _common as c
from ._common import ReplicaAck
from . import _green
from . import _kept
from . import exceptions as exc
from ._native import pottery_semaphore_ffi as _ffi

# One per acquire, so that a grant the caller never took can be given back (see ``_acquire``).
# ``next`` on a count is atomic under the interpreter lock.
_TICKETS = itertools.count(1)


class Semaphore(_kept.KeptWhenDropped, c.NotCopyable):
    """A distributed counting semaphore: at most ``value`` holders at once, across processes.

    A drop-in replacement for the original ``pottery_semaphore.Semaphore``. Every permit is a
    lease judged by Redis server time and refreshed in the background while this process lives,
    so a crashed holder frees its permit within ``lease`` seconds. Permits outlive the object that
    took them, as in the original: a ``release()`` of the same semaphore by another object of
    this process that holds none gives them back. Waiters are served in arrival
    order and woken by a push, without polling. Safe to share across threads: a thread blocked in
    :meth:`acquire` does not hold up a :meth:`release` from another.

    Args:
        value: Permits when the semaphore is first created (later values do not overwrite it).
        key: Name of the semaphore; ``""`` names the semaphore ``"default"``.
        masters: ``redis.Redis`` clients or URL strings; empty means ``redis://localhost:6379``.
            Several independent masters: each permit is a slot held on a majority of them
            (Redlock mode; no FIFO queue, see the README).
        bounded: Raise :class:`BoundedSemaphoreError` on releases beyond the initial value.
        raise_on_redis_errors: Raise when Redis cannot be reached during :meth:`acquire`
            (:class:`QuorumIsImpossible` when so many of several masters fail that no majority is left);
            otherwise ``acquire`` returns ``False``, as the original did without quorum.
        lease: Seconds each permit stays valid without a refresh (extra).
        guard_fresh_server: On a Redis server that started less than a lease ago, grant nothing
            until a lease after its start, in case a restart without persistence wiped permits
            still in use; a semaphore created with it on also waits out a lease after any later
            restart, in case its state came back older (extra; turn off only where Redis
            persists every write, ``appendfsync always``).
        cluster: ``masters`` are seed nodes of one Redis Cluster (extra); the semaphore's keys
            share a hash tag, so one node holds them.
        replica_ack: wait for replicas after every grant and release (``WAIT``, or ``WAITAOF``
            with ``aof=True``), for a primary with replicas (managed Redis; a Sentinel fail-over
            is not followed: reopen on the new primary): a grant they do not acknowledge in time
            is given back and :class:`NotReplicatedError` raised.
    """

    def __init__(
        self,
        *,
        value: int = 1,
        key: str = "",
        masters: Iterable[Any] = frozenset(),
        bounded: bool = True,
        raise_on_redis_errors: bool = False,
        lease: float = 10.0,
        guard_fresh_server: bool = True,
        cluster: bool = False,
        replica_ack: Optional[ReplicaAck] = None,
    ) -> None:
        opts = c.options(
            value=value, key=key, masters=masters, bounded=bounded, lease=lease, guard_fresh_server=guard_fresh_server,
            raise_on_redis_errors=raise_on_redis_errors, cluster=cluster,
            replica_ack=replica_ack,
        )
        self._key = key
        self._bounded = bool(bounded)
        self._raise_on_redis_errors = bool(raise_on_redis_errors)
        self._fork = c.ForkGuard()
        self._blocks = c.OpenBlocks()
        self._kept_as = _kept.identity(opts)
        _kept.prune()
        self._native = c.call(_ffi.Semaphore.open, opts)
        self._spare = _kept.spare_handle(self._native)

    def _here(self) -> Any:
        """The native handle, in the process that opened it (see ``ForkGuard``)."""
        self._fork.check()
        return self._native

    def _call(self, method: str, *args: Any) -> Any:
        return c.call(getattr(self._here(), method), *args)

    def _acquire(self, count: int, blocking: bool, seconds: Optional[float], ticket: int, spared: bool = False) -> Any:
        """The native acquire, waiting again after a signal broke its wait (``EINTR``: it left
        the queue and kept nothing). Python runs the signal's handler between its own steps, at
        the latest on calling ``_call`` again: one that raises (Ctrl-C) ends the acquire there.
        A wait taken up again queues at the back. A handler that raises right after a grant
        (signals that arrive during a script run once it returns) ends the call before its
        permits are seen: the caller gives them back with ``_give_back(ticket)``. Under gevent a
        wait runs on a thread of its own instead (see ``_green``). ``spared``: for a ``with``
        block, whose permits ``release()`` takes last from the moment they are granted."""
        green = _green.hub() if blocking and seconds != 0 else None
        if green is not None:
            return c.call(_green.acquire, self._here(), green, count, blocking, seconds, ticket, spared)
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            try:
                permits = self._call("acquire_interruptible", count, blocking, seconds, ticket, spared)
            except exc.AcquireInterruptedError:
                if deadline is not None:
                    seconds = max(0.0, deadline - time.monotonic())
                continue
            # Ours now: until here a release() from another thread took this grant last (a
            # signal's handler may yet give it back), and from now on only if spared.
            self._here().claim_grant(ticket)
            return permits

    def _give_back(self, ticket: int) -> None:
        """Releases what the acquire under ``ticket`` granted, if the caller raised before
        taking it; nothing when it granted nothing. Under gevent in the background, so that the
        hub waits on no Redis. One native call takes the grant out and gives it back, run to
        its end despite further signals (see ``despite_signals``)."""

        def give_back() -> None:
            try:
                self._here().give_back_grant(ticket, _green.hub() is not None)
            except exc.SemaphoreError:
                pass  # used in another process (fork): its grants are not this one's
            except c.NATIVE_ERRORS:
                pass  # Redis out of reach: the handle releases them in the background

        c.despite_signals(give_back)

    def acquire(self, blocking: bool = True, timeout: Optional[float] = -1, *, n: int = 1) -> bool:
        """Take ``n`` permits (all at once or none). Returns whether they were taken.

        ``blocking=False`` answers at once. ``timeout`` in seconds bounds the wait; ``-1`` or
        ``None`` waits forever.
        """
        count = c.integer("n", n)
        seconds = c.timeout_seconds(blocking, timeout)
        ticket = next(_TICKETS)
        try:
            return bool(self._acquire(count, bool(blocking), seconds, ticket))
        except exc.RedisUnavailableError:
            if self._raise_on_redis_errors:
                raise
            return False
        except BaseException:
            self._give_back(ticket)
            raise

    def release(self, n: int = 1) -> None:
        """Give back ``n`` permits: yours first; then, as with ``threading.Semaphore``, permits
        are fungible and other holders' are released (they see them in :meth:`lost_permits`).

        After an error (but :class:`InvalidArgumentError` and :class:`BoundedSemaphoreError`,
        which change nothing, bar one gap with permits of dropped objects that README names)
        the release may or may not have happened: the semaphore finishes it in the background,
        so do not call ``release`` again for it.

        The permits of running ``with`` blocks go last: each block gives back its own. An
        object that holds no permit gives back those that objects of this process took and
        dropped, when there are ``n`` of them, rather than any other holder's (see ``_kept``)."""
        count = c.check_count(c.integer("n", n))
        taken = [] if self._here().held() else _kept.take(self._kept_as, count)
        released, failed, reached = 0, [], 0
        try:
            for native, tokens in taken:
                try:
                    released += len(native.release_permits(tokens))
                except c.NATIVE_ERRORS as e:
                    released += len(tokens)  # that handle finishes it in the background
                    failed.append(e)
                reached += 1
        except BaseException:
            # A signal's handler raised: those not surely reached stay kept for a later release.
            _kept.put_back(self._kept_as, taken[reached:])
            raise
        if failed:
            raise c.translate(failed[0])
        # A kept permit lost meanwhile (another holder's release took it) was free already:
        # what it leaves short goes as any release does (refused if bounded and nothing is
        # held, though the kept ones went back).
        if not taken or released < count:
            self._call("release", count - released)

    def locked(self) -> bool:
        """True when no permit is available."""
        return bool(self._call("locked"))

    @property
    def value(self) -> int:
        """Permits available now."""
        return int(self._call("value"))

    @property
    def initial_value(self) -> int:
        """The value the semaphore was created with, as Redis holds it."""
        return int(self._call("initial_value"))

    # Extras beyond the original API.

    @property
    def key(self) -> str:
        """The semaphore's name as Redis knows it."""
        return str(self._here().key())

    @property
    def holder_id(self) -> str:
        """This object's holder id, as :meth:`status` lists it."""
        return str(self._here().holder_id())

    @property
    def lease(self) -> float:
        """Seconds a permit stays valid without a refresh."""
        return int(self._here().lease_ms()) / 1000.0

    @property
    def permits(self) -> List[c.Permit]:
        """The permits you hold, as Redis has them (token, lease deadline, time left)."""
        return [c.permit(p) for p in self._call("permits")]

    @property
    def fencing_token(self) -> Optional[int]:
        """The fencing token of your newest permit, or None when you hold none."""
        held = self._here().held()
        return max((p.token for p in held), default=None)

    @property
    def lease_deadline(self) -> Optional[float]:
        """When the first of your permits' leases ends (Unix seconds, Redis time), or None."""
        held = self._here().held()
        if not held:
            return None
        return min(p.deadline_ms for p in held) / 1000.0

    def lost_permits(self) -> List[c.Permit]:
        """Permits you held and lost since the last call (their lease ended, or another holder
        released them). Stop using what such a permit protected."""
        return [c.permit(p) for p in self._here().take_lost()]

    def status(self) -> c.Status:
        """Capacity, available permits, every holder and the waiters in the order served."""
        return c.status(self._call("status"))

    def holders(self) -> List[c.Holder]:
        """Every permit held, by anyone."""
        return self.status().holders

    def waiters(self) -> List[c.Waiter]:
        """Queued acquires, first served first."""
        return self.status().waiters

    def __enter__(self) -> "Semaphore":
        """Acquire a permit, waiting as long as it takes. A ``with`` block cannot be told that
        no permit was taken, so where ``acquire`` would return False for an unreachable Redis,
        this raises :class:`RedisUnavailableError` instead: the block never runs without a
        permit. (With several masters an acquire without a time-out keeps trying.)"""
        ticket, entered = next(_TICKETS), []
        try:
            permits = self._acquire(1, True, None, ticket, spared=True)
            if not permits:
                raise exc.SemaphoreRuntimeError("a blocking acquire without a time-out returned no permit")
            self._blocks.enter(sys._getframe(1), threading.current_thread(), [p.token for p in permits], entered)
            return self
        except BaseException:
            # Raised before the block began (a signal's handler): it never ends, so nothing of it stays.

            def undo() -> None:
                for block in entered:
                    self._blocks.discard(block)
                self._give_back(ticket)

            c.despite_signals(undo)
            raise

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Release the permit this block took, and only that one: if its lease ended meanwhile
        (see :meth:`lost_permits`), another holder's permit is not released in its place, as
        ``release()`` would (permits are fungible), which would let one more holder in. (A
        permit the block itself released and acquired again is not the block's: release it.)
        With no block open, it is ``release()``, as in the original: a permit from ``acquire()``
        whose release was handed to an ``ExitStack`` as this method."""
        left: List[Any] = []
        frame, owner = sys._getframe(1), threading.current_thread()
        plain: List[bool] = []  # a release() begun: not to be repeated
        try:
            tokens = self._blocks.leave(frame, owner, left)
            if tokens is c.NOT_ENTERED:
                # No block open: the permit came from acquire() (its __exit__ handed to an
                # ExitStack, say), and this is its release, as in the original.
                plain.append(True)
                self.release()
            elif tokens is None:
                c.unknown_block_left()
            else:
                self._call("release_permits", tokens)
        except BaseException:
            # A signal's handler that raised (or Redis out of reach): before the block was
            # found, it is looked for again (nothing was changed); once found, before its
            # release or after, it is released once more, which gives back these exact permits
            # or nothing. To the end despite further signals (see ``despite_signals``).

            def finish() -> None:
                if plain:
                    return  # release() finishes in the background after an error (see there)
                if not left and self._blocks.leave(frame, owner, left) is c.NOT_ENTERED:
                    plain.append(True)
                    self.release()
                for block in left:
                    try:
                        self._here().release_permits(block.tokens)
                    except (exc.SemaphoreError, *c.NATIVE_ERRORS):
                        pass  # Redis out of reach: the handle releases them in the background
                    self._blocks.discard(block)  # still recorded if the signal broke off leave()

            c.despite_signals(finish)
            raise

    def __repr__(self) -> str:
        try:
            state = f"value={self.value}/{self.initial_value}"
        except exc.SemaphoreError as e:
            state = f"value=? ({type(e).__name__})"
        return f"<{type(self).__name__} key={self._key!r} {state} bounded={self._bounded}>"
