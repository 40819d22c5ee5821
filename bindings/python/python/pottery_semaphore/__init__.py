"""Distributed counting semaphores on Redis and Valkey: a drop-in replacement for the
``pottery-semaphore`` package, with leases, fencing tokens, FIFO fairness and no polling.

>>> from redis import Redis
>>> from pottery_semaphore import Semaphore
>>> sem = Semaphore(value=3, key="my-resource", masters={Redis()})
>>> with sem:
...     pass  # at most 3 holders here, across every process

The protocol runs in a WebAssembly component inside the native library this package ships;
Rust hosts and the Kotlin and Swift SDKs share semaphores with it by key.
"""

from __future__ import annotations

from typing import Final, Tuple

from ._common import DEFAULT_KEY, Holder, Permit, ReplicaAck, Status, Waiter
from .aioprimitives import AIORedisCounter, AIORedisSimpleQueue, QueueEmpty
from .aiosemaphore import AIOSemaphore
from .exceptions import (
    AcquireInterruptedError,
    AuthenticationError,
    BoundedSemaphoreError,
    InvalidArgumentError,
    NotReplicatedError,
    RedisUnavailableError,
    QuorumIsImpossible,
    SemaphoreError,
    RedisReplyError,
    SemaphoreRuntimeError,
    WrongTypeError,
)
from .semaphore import Semaphore
from ._native import pottery_semaphore_ffi as _ffi

# Python runs signal handlers between native calls only: a signal sent to the process while a
# call holds signals back must stay for the caller's thread (which ends a wait on it), not go
# to one of the runtime's threads. Before any semaphore starts the runtime.
_ffi.keep_signals_off_runtime_threads()
del _ffi

__all__: Final[Tuple[str, ...]] = (
    "Semaphore",
    "AIOSemaphore",
    "ReplicaAck",
    "SemaphoreError",
    "BoundedSemaphoreError",
    "AIORedisCounter",
    "AIORedisSimpleQueue",
    "QueueEmpty",
    "InvalidArgumentError",
    "RedisUnavailableError",
    "QuorumIsImpossible",
    "AuthenticationError",
    "WrongTypeError",
    "SemaphoreRuntimeError",
    "RedisReplyError",
    "NotReplicatedError",
    "AcquireInterruptedError",
    "Permit",
    "Holder",
    "Waiter",
    "Status",
    "DEFAULT_KEY",
)

__version__ = "0.1.0"
