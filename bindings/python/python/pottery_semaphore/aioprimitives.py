"""Small asyncio Redis primitives the original package exported next to its semaphores.

The semaphores here do not use them; they stay importable so code that used them keeps
working. They take a ``redis.asyncio.Redis`` client.
"""

from __future__ import annotations

import json
from typing import Any, Optional


def _encode(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _decode(raw: Any) -> Any:
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)


class QueueEmpty(Exception):
    """A non-blocking get found the queue empty, or a blocking one timed out."""


class AIORedisCounter:
    """Named integer counters in one Redis hash (JSON-encoded fields and values)."""

    def __init__(self, *, redis: Any, key: str) -> None:
        self._redis = redis
        self._key = key

    @property
    def key(self) -> str:
        """The Redis key of the hash."""
        return self._key

    async def get(self, field: str, default: int = 0) -> int:
        """The counter's value, or ``default`` when it does not exist."""
        raw = await self._redis.hget(self._key, _encode(field))
        return default if raw is None else int(_decode(raw))

    async def set(self, field: str, value: int) -> None:
        """Set the counter to ``value``."""
        await self._redis.hset(self._key, _encode(field), _encode(value))

    async def incr(self, field: str, amount: int = 1) -> int:
        """Add ``amount`` atomically (a WATCH/MULTI transaction) and return the new value."""
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._key)
                    raw = await pipe.hget(self._key, _encode(field))
                    value = (0 if raw is None else int(_decode(raw))) + amount
                    pipe.multi()
                    pipe.hset(self._key, _encode(field), _encode(value))
                    await pipe.execute()
                    return value
                except Exception as e:  # redis.WatchError: someone else changed it; retry
                    if type(e).__name__ != "WatchError":
                        raise

    async def decr(self, field: str, amount: int = 1) -> int:
        """Subtract ``amount`` atomically and return the new value."""
        return await self.incr(field, -amount)

    async def exists(self, field: str) -> bool:
        """Whether the counter exists."""
        return bool(await self._redis.hexists(self._key, _encode(field)))


class AIORedisSimpleQueue:
    """A FIFO queue of JSON-encoded items in a Redis list."""

    def __init__(self, *, redis: Any, key: str) -> None:
        self._redis = redis
        self._key = key

    @property
    def key(self) -> str:
        """The Redis key of the list."""
        return self._key

    async def qsize(self) -> int:
        """Items in the queue."""
        return int(await self._redis.llen(self._key))

    async def empty(self) -> bool:
        """Whether the queue is empty."""
        return await self.qsize() == 0

    async def put(self, item: Any) -> None:
        """Append ``item``."""
        await self._redis.rpush(self._key, _encode(item))

    async def get(self, *, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the first item; raise :class:`QueueEmpty` when there is none
        (non-blocking) or none arrived within ``timeout`` seconds (``None`` waits forever)."""
        if not block:
            raw = await self._redis.lpop(self._key)
            if raw is None:
                raise QueueEmpty()
            return _decode(raw)
        popped = await self._redis.blpop([self._key], timeout=0 if timeout is None else timeout)
        if not popped:
            raise QueueEmpty()
        return _decode(popped[1])
