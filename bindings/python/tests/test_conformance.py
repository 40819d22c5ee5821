"""The shared conformance scenarios (tests/conformance/scenarios.json) through the Python SDK;
the Rust and Kotlin suites run the same file, so the SDKs cannot drift apart."""

from __future__ import annotations

import json
import math
import uuid

import pytest

from conftest import REPO
from pottery_semaphore import (
    AuthenticationError,
    BoundedSemaphoreError,
    InvalidArgumentError,
    RedisUnavailableError,
    Semaphore,
    WrongTypeError,
)

SCENARIOS = json.loads((REPO / "tests" / "conformance" / "scenarios.json").read_text())["scenarios"]
KINDS = [
    (BoundedSemaphoreError, "bounded"),
    (InvalidArgumentError, "invalid_argument"),
    (WrongTypeError, "wrong_type"),
    (RedisUnavailableError, "unreachable"),
    (AuthenticationError, "auth"),
]


def kind(e: BaseException) -> str:
    return next((name for cls, name in KINDS if isinstance(e, cls)), type(e).__name__)


def open_handle(url: str, key: str, spec: dict) -> Semaphore:
    if "key_length" in spec:
        key = "k" * spec["key_length"]
    return Semaphore(value=spec.get("value", 1), key=key, masters={url}, bounded=spec.get("bounded", True))


def run_step(handles, url, key, step):
    op = step["op"]
    if op == "open":
        return open_handle(url, key, step) and None
    sem = handles[step["handle"]]
    n = step.get("n", 1)
    if op == "acquire":
        timeout = step.get("timeout", -1)
        if timeout == "nan":
            timeout = math.nan
        return sem.acquire(step.get("blocking", True), timeout, n=n)
    if op == "release":
        return sem.release(n)
    if op == "value":
        return sem.value
    if op == "initial_value":
        return sem.initial_value
    if op == "locked":
        return sem.locked()
    if op == "held":
        return len(sem.permits)
    raise AssertionError(f"unknown op {op}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_scenario(server, scenario):
    key = f"conformance-{uuid.uuid4().hex[:8]}"
    handles = [open_handle(server.url, key, spec) for spec in scenario["handles"]]
    for i, step in enumerate(scenario["steps"]):
        at = f"step {i}: {step}"
        if "error" in step:
            with pytest.raises(Exception) as info:
                run_step(handles, server.url, key, step)
            assert kind(info.value) == step["error"], at
            if step["error"] == "bounded":
                assert (info.value.current, info.value.initial) == (step["current"], step["initial"]), at
        else:
            got = run_step(handles, server.url, key, step)
            if "expect" in step:
                assert got == step["expect"], at
