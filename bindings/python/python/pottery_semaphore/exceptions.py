"""Exceptions of pottery_semaphore.

Every error the native layer reports becomes one of these, so callers can catch the Python
built-in they expect (``ValueError``, ``ConnectionError``...), redis-py's class for the same
failure (as code written for the original library, which let redis-py's errors through, does),
or :class:`SemaphoreError` for all.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as _redis

__all__ = [
    "SemaphoreError",
    "BoundedSemaphoreError",
    "InvalidArgumentError",
    "RedisUnavailableError",
    "QuorumIsImpossible",
    "AuthenticationError",
    "WrongTypeError",
    "SemaphoreRuntimeError",
    "RedisReplyError",
    "NotReplicatedError",
    "AcquireInterruptedError",
]


class SemaphoreError(Exception):
    """Base class of every error raised by pottery_semaphore."""


class BoundedSemaphoreError(SemaphoreError, ValueError):
    """Releasing would exceed the initial value of a bounded semaphore; nothing changed.

    Like ``threading.BoundedSemaphore``, which raises ``ValueError`` in the same case.
    """

    def __init__(self, key: str, current: int, initial: int) -> None:
        self.key = key
        self.current = current
        self.initial = initial
        super().__init__(
            f"Semaphore {key!r} released too many times: current={current}, initial={initial}"
        )

    def __reduce__(self) -> Any:
        # Rebuilt from its fields, not from ``args`` (the message): pickled across processes (a
        # process pool's worker raising it) and copied as it was made.
        return (type(self), (self.key, self.current, self.initial), self.__dict__)


class InvalidArgumentError(SemaphoreError, ValueError):
    """An argument is out of range (negative value, ``n < 1``, NaN timeout, empty key...)."""


class RedisUnavailableError(SemaphoreError, ConnectionError, _redis.ConnectionError, RuntimeError):
    """Redis could not be reached, or the connection broke. Also a ``RuntimeError``: the
    original library raised pottery's ``QuorumIsImpossible``, a ``RuntimeError``, for an
    unreachable Redis with ``raise_on_redis_errors=True``, so code that catches that still does."""


class QuorumIsImpossible(RedisUnavailableError):
    """So many of several masters failed that no majority could decide (named after the
    original library's exception for the same case, which is pottery's own class: code that
    catches that one by name must catch this one, or ``RuntimeError``, instead). Raised by
    ``acquire`` only with ``raise_on_redis_errors=True``; otherwise such an acquire returns
    ``False``."""


class AuthenticationError(SemaphoreError, PermissionError, _redis.AuthenticationError):
    """Redis refused the credentials, or the ACL user lacks a permission."""


class WrongTypeError(SemaphoreError, TypeError, _redis.ResponseError):
    """A key of this semaphore holds another Redis type."""


class SemaphoreRuntimeError(SemaphoreError, RuntimeError):
    """Any other failure: an error reply from Redis, or the protocol component failing."""


class RedisReplyError(SemaphoreRuntimeError, _redis.ResponseError):
    """Redis answered with an error (``OOM`` at ``maxmemory``, ``READONLY`` on a replica,
    ``NOREPLICAS``, ``BUSY``...), or with a reply the protocol did not expect. Also redis-py's
    ``ResponseError``, which the original library let through; a
    :class:`SemaphoreRuntimeError`, which it was reported as before it had a class of its own."""


class NotReplicatedError(SemaphoreRuntimeError):
    """Fewer replicas than configured acknowledged a change in time. An acquire gave its permits
    back; a release did happen on the primary. A :class:`SemaphoreRuntimeError`, which it was
    reported as before it had a class of its own.
    """


class AcquireInterruptedError(SemaphoreError, InterruptedError):
    """A signal broke a blocking wait for permits (``EINTR``): the waiter left the queue and
    kept nothing. ``acquire`` and ``with`` wait again by themselves unless the signal's handler
    raised (Ctrl-C), so callers rarely see this."""
