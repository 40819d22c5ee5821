"""Distributed counting semaphores on Redis (placeholder: re-exports the generated bindings)."""

from ._native import *  # noqa: F401,F403
