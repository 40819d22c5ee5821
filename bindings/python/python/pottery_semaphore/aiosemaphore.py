"""The asyncio semaphore."""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from typing import Any, Iterable, List, Optional

from . import _cancel_safe
from . import _common as c
from . import _kept
from ._common import ReplicaAck
from . import exceptions as exc
from ._native import pottery_semaphore_ffi as _ffi


class AIOSemaphore(_kept.KeptWhenDropped, c.NotCopyable):
    """The asyncio twin of :class:`Semaphore`, with the same parameters; it shares semaphores
    with :class:`Semaphore` objects, Rust hosts and the other SDKs using the same key.

    Construction does no I/O; Redis is reached on the first awaited call. Cancelling an awaiting
    :meth:`acquire` (``asyncio.wait_for``, task cancellation) leaves the queue and gives back
    anything granted meanwhile.
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
        self._options = c.options(
            value=value, key=key, masters=masters, bounded=bounded, lease=lease, guard_fresh_server=guard_fresh_server,
            raise_on_redis_errors=raise_on_redis_errors, cluster=cluster,
            replica_ack=replica_ack,
        )
        self._key = key
        self._kept_as = _kept.identity(self._options)
        _kept.prune()
        self._bounded = bool(bounded)
        self._raise_on_redis_errors = bool(raise_on_redis_errors)
        self._fork = c.ForkGuard()  # re-armed when it opens (it does no I/O before)
        self._native: Optional[Any] = None
        # One opening at a time per event loop (an asyncio.Lock serves one loop only: a second
        # loop on another thread that waited on it could hang). Loops on other threads open
        # their own, and the first handle kept wins; the others, holding nothing, are let go.
        self._opening: "weakref.WeakKeyDictionary[Any, asyncio.Lock]" = weakref.WeakKeyDictionary()
        self._open_lock = threading.Lock()
        self._blocks = c.OpenBlocks()

    async def _open(self) -> Any:
        if self._native is not None:
            # Opened before a fork: its threads are the parent's. (Created but not yet opened,
            # it opens here: it did no I/O before.)
            self._fork.check()
            return self._native
        if self._fork.forked():
            # Not opened in the parent: the child opens it, with locks of its own (another
            # thread of the parent may have held these at the fork, and would never let go).
            self._opening, self._open_lock, self._fork = weakref.WeakKeyDictionary(), threading.Lock(), c.ForkGuard()
        loop = asyncio.get_running_loop()
        with self._open_lock:
            opening = self._opening.setdefault(loop, asyncio.Lock())
        async with opening:
            if self._native is None:
                try:
                    native = await _cancel_safe.open_semaphore(self._options)
                except c.NATIVE_ERRORS as e:
                    raise c.translate(e) from None
                with self._open_lock:
                    if self._native is None:
                        self._fork = c.ForkGuard()  # this process opened it
                        self._spare = _kept.spare_handle(native)
                        self._native = native
        return self._native

    async def _call(self, method: str, *args: Any) -> Any:
        native = await self._open()
        try:
            return await getattr(native, method)(*args)
        except c.NATIVE_ERRORS as e:
            raise c.translate(e) from None

    async def _acquire(self, n: int, blocking: bool, timeout_s: Optional[float], spared: bool = False) -> List[Any]:
        """The permits taken (empty: not acquired); ``spared`` as for ``Semaphore._acquire``.
        Granted spared until this task has them (no ``await`` between that and here): until
        then a cancellation gives them back, and a ``release()`` from another task must not take
        them in place of one of the handle's others."""
        native = await self._open()
        try:
            permits = await _cancel_safe.acquire(native, n, blocking, timeout_s, True)
        except c.NATIVE_ERRORS as e:
            raise c.translate(e) from None
        if not spared and permits:
            native.unspare([p.token for p in permits])
        return permits

    async def acquire(self, blocking: bool = True, timeout: Optional[float] = -1, *, n: int = 1) -> bool:
        """Take ``n`` permits (all at once or none); returns whether they were taken.
        ``timeout`` in seconds; ``-1`` or ``None`` waits forever."""
        # Checked here: the first call opens the semaphore, which an unreachable Redis fails first.
        count = c.check_count(c.integer("n", n))
        seconds = c.check_timeout(c.timeout_seconds(blocking, timeout))
        try:
            return bool(await self._acquire(count, bool(blocking), seconds))
        except exc.RedisUnavailableError:
            if self._raise_on_redis_errors:
                raise
            return False

    async def release(self, n: int = 1) -> None:
        """Give back ``n`` permits: yours first, then other holders' (permits are fungible).
        After an error (but :class:`InvalidArgumentError` and :class:`BoundedSemaphoreError`) the
        release is finished in the background: do not call ``release`` again for it. An object
        that holds no permit gives back those that objects of this process took and dropped,
        when there are ``n`` of them (see ``Semaphore.release``)."""
        count = c.check_count(c.integer("n", n))
        taken = [] if self._held() else _kept.take(self._kept_as, count)
        released, failed, reached = 0, [], 0
        try:
            for native, tokens in taken:
                try:
                    released += len(await native.release_permits_async(tokens))
                except c.NATIVE_ERRORS as e:
                    released += len(tokens)  # that handle finishes it in the background
                    failed.append(e)
                reached += 1
        except BaseException:
            # Cancelled: those not surely reached stay kept for a later release.
            _kept.put_back(self._kept_as, taken[reached:])
            raise
        if failed:
            raise c.translate(failed[0])
        if not taken or released < count:
            await self._call("release_async", count - released)

    async def locked(self) -> bool:
        """True when no permit is available."""
        return bool(await self._call("locked_async"))

    async def get_value(self) -> int:
        """Permits available now."""
        return int(await self._call("value_async"))

    async def get_initial_value(self) -> int:
        """The value the semaphore was created with, as Redis holds it."""
        return int(await self._call("initial_value_async"))

    # Extras beyond the original API.

    async def permits(self) -> List[c.Permit]:
        """The permits you hold, as Redis has them."""
        return [c.permit(p) for p in await self._call("permits_async")]

    async def status(self) -> c.Status:
        """Capacity, available permits, every holder and the waiters in the order served."""
        return c.status(await self._call("status_async"))

    async def holders(self) -> List[c.Holder]:
        """Every permit held, by anyone."""
        return (await self.status()).holders

    async def waiters(self) -> List[c.Waiter]:
        """Queued acquires, first served first."""
        return (await self.status()).waiters

    @property
    def key(self) -> str:
        """The semaphore's name as Redis knows it."""
        return str(self._options.key)

    @property
    def lease(self) -> float:
        """Seconds a permit stays valid without a refresh."""
        return int(self._options.lease_ms) / 1000.0

    def _opened(self) -> Optional[Any]:
        """The native handle once opened, in the process that opened it (see ``ForkGuard``)."""
        if self._native is not None:
            self._fork.check()
        return self._native

    def _held(self) -> List[Any]:
        native = self._opened()
        return [] if native is None else native.held()

    @property
    def fencing_token(self) -> Optional[int]:
        """The fencing token of your newest permit, or None when you hold none."""
        return max((p.token for p in self._held()), default=None)

    @property
    def lease_deadline(self) -> Optional[float]:
        """When the first of your permits' leases ends (Unix seconds, Redis time), or None."""
        held = self._held()
        if not held:
            return None
        return min(p.deadline_ms for p in held) / 1000.0

    @property
    def holder_id(self) -> Optional[str]:
        """This object's holder id once opened (None before the first awaited call)."""
        native = self._opened()
        return None if native is None else str(native.holder_id())

    def lost_permits(self) -> List[c.Permit]:
        """Permits you held and lost since the last call (lease ended, or released by another
        holder). Stop using what such a permit protected."""
        native = self._opened()
        return [] if native is None else [c.permit(p) for p in native.take_lost()]

    async def __aenter__(self) -> "AIOSemaphore":
        """Acquire a permit, waiting as long as it takes. As for ``with``: where ``acquire``
        would return False for an unreachable Redis, this raises
        :class:`RedisUnavailableError`; the block never runs without a permit."""
        permits = await self._acquire(1, True, None, spared=True)
        if not permits:
            raise exc.SemaphoreRuntimeError("a blocking acquire without a time-out returned no permit")
        self._blocks.enter(sys._getframe(1), asyncio.current_task(), [p.token for p in permits], [])
        return self

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Release the permit this block took, and only that one (see ``Semaphore.__exit__``)."""
        tokens = self._blocks.leave(sys._getframe(1), asyncio.current_task(), [])
        if tokens is c.NOT_ENTERED:
            await self.release()  # a permit from acquire(), as in the original
        elif tokens is None:
            c.unknown_block_left()
        else:
            await self._call("release_permits_async", tokens)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} key={self._key!r} bounded={self._bounded}>"
