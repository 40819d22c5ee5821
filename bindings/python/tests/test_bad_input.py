"""Bad input in Python terms: Python exceptions, never a crash, never a leaked permit."""

from __future__ import annotations

import math
import os
from decimal import Decimal
from fractions import Fraction

import pytest
import redis.exceptions

from pottery_semaphore import (
    AuthenticationError,
    InvalidArgumentError,
    NotReplicatedError,
    RedisUnavailableError,
    ReplicaAck,
    Semaphore,
    SemaphoreRuntimeError,
    WrongTypeError,
)


@pytest.mark.parametrize("value", ["3", 2.5, None, [1]])
def test_wrong_types_for_value(redis_client, unique_key, value):
    with pytest.raises(TypeError):
        Semaphore(value=value, key=unique_key, masters={redis_client})


def test_wrong_types_and_huge_numbers(redis_client, unique_key):
    with pytest.raises(TypeError):
        Semaphore(key=42, masters={redis_client})
    with pytest.raises(TypeError):
        Semaphore(key=unique_key, masters="redis://localhost")
    with pytest.raises(TypeError):
        Semaphore(key=unique_key, masters={object()})
    with pytest.raises(InvalidArgumentError, match="at most"):
        Semaphore(value=10**30, key=unique_key, masters={redis_client})
    sem = Semaphore(value=2, key=unique_key, masters={redis_client})
    for bad_n in ["1", 1.0, None]:
        with pytest.raises(TypeError):
            sem.acquire(n=bad_n)
        with pytest.raises(TypeError):
            sem.release(bad_n)
    for huge in [10**30, -(10**30), 2**63]:
        with pytest.raises(ValueError):
            sem.acquire(n=huge)
        with pytest.raises(ValueError):
            sem.release(huge)
    for not_a_number in ["soon", "5", b"5", True]:
        with pytest.raises(TypeError):
            sem.acquire(timeout=not_a_number)
    assert sem.value == 2, "nothing leaked"


@pytest.mark.parametrize("timeout", [math.nan, -0.5, -2, -math.inf, Decimal("NaN"), Decimal("sNaN")])
def test_bad_timeouts(redis_client, unique_key, timeout):
    sem = Semaphore(value=1, key=unique_key, masters={redis_client})
    with pytest.raises(ValueError, match="timeout"):
        sem.acquire(timeout=timeout)
    assert sem.value == 1


def test_bad_keys_and_lease(redis_client):
    with pytest.raises(InvalidArgumentError, match="at most 1024"):
        Semaphore(key="k" * (1 << 20), masters={redis_client})
    for lease in [0, -1, math.nan, "10", math.inf, 1e17, 10**400, -(10**400), Decimal("sNaN")]:
        with pytest.raises(InvalidArgumentError):
            Semaphore(key="k", masters={redis_client}, lease=lease).value
    with pytest.raises(InvalidArgumentError):
        Semaphore(key="k", masters={redis_client}, replica_ack=ReplicaAck(timeout=Decimal("sNaN"))).value
    # Text that has no UTF-8 form: a lone surrogate, as os.fsdecode makes of bytes that are not UTF-8.
    with pytest.raises(InvalidArgumentError, match="key"):
        Semaphore(key=os.fsdecode(b"job-\xff"), masters={redis_client})
    with pytest.raises(InvalidArgumentError, match="URL"):
        Semaphore(key="k", masters={"redis://h\udcff:6379"})


def test_numbers_beyond_a_float_or_the_native_range(redis_client, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={redis_client})
    assert sem.acquire(timeout=10**400), "a whole number beyond any float waits as long as it takes"
    sem.release()
    with pytest.raises(InvalidArgumentError, match="timeout"):
        sem.acquire(timeout=-(10**400))
    with pytest.raises(InvalidArgumentError, match="timeout"):
        sem.acquire(timeout=-Fraction(10**400))
    for timeout in [1e17, 10**400, Fraction(10**400), math.inf, 0, "0.1"]:
        with pytest.raises(InvalidArgumentError):
            Semaphore(key=unique_key, masters={redis_client}, replica_ack=ReplicaAck(timeout=timeout)).value
    # Real numbers of other types are taken as they were.
    assert ReplicaAck(timeout=Fraction(1, 10))._native().timeout_ms == 100
    assert ReplicaAck(timeout=Decimal("0.25"))._native().timeout_ms == 250
    assert sem.value == 1


def test_a_key_of_another_type(redis_client, unique_key):
    redis_client.set(f"pottery-semaphore:{{{unique_key}}}:meta", "x")
    with pytest.raises(WrongTypeError):
        Semaphore(key=unique_key, masters={redis_client})
    # Code written for the original, which let redis-py's errors through, still catches them.
    with pytest.raises(redis.exceptions.ResponseError):
        Semaphore(key=unique_key, masters={redis_client})


def test_redis_down_and_wrong_password(own_server, unique_key):
    with pytest.raises(RedisUnavailableError):
        Semaphore(key=unique_key, masters={"redis://127.0.0.1:1"})
    with pytest.raises(redis.exceptions.ConnectionError):
        Semaphore(key=unique_key, masters={"redis://127.0.0.1:1"})
    sem = Semaphore(key=unique_key, masters={own_server.url}, guard_fresh_server=False)
    strict = Semaphore(key=unique_key, masters={own_server.url}, guard_fresh_server=False, raise_on_redis_errors=True)
    own_server.kill()
    assert sem.acquire() is False, "raise_on_redis_errors=False: not acquired, as without quorum"
    with pytest.raises(RedisUnavailableError):
        strict.acquire()
    # The original raised pottery's QuorumIsImpossible, a RuntimeError, here.
    with pytest.raises(RuntimeError):
        strict.acquire()
    # A with block cannot be told it holds nothing: it must not run.
    ran = []
    with pytest.raises(RedisUnavailableError):
        with sem:
            ran.append(1)
    assert ran == [], "the block ran without a permit"
    # "May or may not have happened", not BoundedSemaphoreError's "nothing changed".
    with pytest.raises(RedisUnavailableError):
        sem.release()


def test_an_error_reply_is_also_redis_pys_response_error(own_server, unique_key):
    sem = Semaphore(value=1, key=unique_key, masters={own_server.url}, guard_fresh_server=False)
    client = own_server.client()
    client.config_set("maxmemory", 1)  # every write now answers OOM (policy noeviction)
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="OOM") as raised:
            sem.acquire(blocking=False)
        assert isinstance(raised.value, SemaphoreRuntimeError), "what it was reported as before"
    finally:
        client.config_set("maxmemory", 0)
    assert sem.acquire(blocking=False), "nothing was left behind by the refused acquire"


def test_wrong_password(unique_key):
    from conftest import Server

    server = Server("--requirepass", "s3cret")
    try:
        with pytest.raises(AuthenticationError):
            Semaphore(key=unique_key, masters={server.client(password="wrong")})
        with pytest.raises(redis.exceptions.AuthenticationError):
            Semaphore(key=unique_key, masters={server.client(password="wrong")})
        sem = Semaphore(key=unique_key, masters={server.client(password="s3cret")}, guard_fresh_server=False)
        assert sem.acquire(blocking=False)
    finally:
        server.close()


def test_a_change_replicas_did_not_acknowledge_is_not_replicated_error():
    from pottery_semaphore._common import _ffi, translate

    e = translate(_ffi.SemaphoreError.NotReplicated(message="0 of 1 replicas acknowledged within 100 ms"))
    assert isinstance(e, NotReplicatedError)
    assert isinstance(e, SemaphoreRuntimeError), "what it was reported as before"
    assert str(e) == "not replicated: 0 of 1 replicas acknowledged within 100 ms"


def test_a_panic_keeps_its_text():
    from pottery_semaphore._common import _ffi, translate

    e = translate(_ffi.InternalError("boom"))
    assert isinstance(e, SemaphoreRuntimeError)
    assert str(e) == "InternalError: boom"


async def test_async_with_does_not_run_without_a_permit(own_server, unique_key):
    from pottery_semaphore import AIOSemaphore

    sem = AIOSemaphore(key=unique_key, masters={own_server.url}, guard_fresh_server=False)
    assert await sem.get_value() == 1
    own_server.kill()
    assert await sem.acquire() is False, "raise_on_redis_errors=False: not acquired"
    ran = []
    with pytest.raises(RedisUnavailableError):
        async with sem:
            ran.append(1)
    assert ran == [], "the block ran without a permit"
