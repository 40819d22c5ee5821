"""Permits whose semaphore object went away while holding them.

In the original library a permit belonged to the semaphore in Redis, not to the object that took
it: one object could acquire and be dropped, and another with the same key release later (a
start hook and a finish hook, say). Here each object is a holder that refreshes its permits'
leases, and one that was dropped gave its permits back at once, letting one holder too many in
while the code that acquired them still ran. So an object that goes while holding permits leaves
its native handle here: those permits stay held, and refreshed, while this process lives, until
a release gives them back or their lease is lost (their handle is then let go). A
``release(n)`` of the same semaphore in this process, by an object that holds none itself, gives
back ``n`` of these when at least ``n`` are kept.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Deque, Dict, List, Tuple
from urllib.parse import parse_qs, urlsplit

Taken = List[Tuple[Any, List[int]]]

_lock = threading.Lock()
# Semaphore (see ``identity``) -> the handles kept, each with the tokens it still holds for us.
_kept: Dict[Tuple[Any, ...], List[Tuple[Any, List[int]]]] = {}
# What finalizers (and interrupted releases) hand over: they never take ``_lock`` (a garbage
# collection may run a finalizer on a thread that holds it), and ``deque.append`` is atomic.
_dropped: Deque[Tuple[Tuple[Any, ...], Any, List[int]]] = collections.deque()
# A forked child's copies of the parent's handles: never used there, nor freed (their threads
# and permits are the parent's).
_parents: List[Any] = []


def _forget_the_parents() -> None:
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _parents.append((dict(_kept), list(_dropped)))
    _kept.clear()
    _dropped.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents)


def _server(url: str) -> Tuple[Any, ...]:
    """The server and database a URL names as the native client reads it, however it is spelled
    (a client's URL ends in its db, a string may not; ``localhost`` and ``127.0.0.1`` stay
    apart). The db is the path's for TCP (a ``?db=`` there is not read), the query's for unix."""
    try:
        parts = urlsplit(url)
        if parts.scheme in ("unix", "redis+unix", "valkey+unix"):
            return ("unix", parts.path, int(parse_qs(parts.query).get("db", ["0"])[0]))
        return ("tcp", parts.scheme in ("rediss", "valkeys"), (parts.hostname or "").lower(), parts.port or 6379,
                int(parts.path.strip("/") or "0"))
    except ValueError:
        return ("url", url)


def identity(options: Any) -> Tuple[Any, ...]:
    """What tells one semaphore from another: its key on its servers."""
    servers = sorted((_server(u) for u in [options.url, *options.more_masters]), key=repr)
    return (options.key, tuple(servers), options.cluster)


def keep(ident: Tuple[Any, ...], native: Any) -> None:
    """Keeps ``native`` if it holds permits, for an object being finalized. Never raises, and
    takes no lock."""
    try:
        tokens = [p.token for p in native.held()]
        if tokens:
            _dropped.append((ident, native, tokens))
    except Exception:  # finalizing: at interpreter exit, the module's names may be gone
        pass


def _settle() -> None:
    """Moves what was handed over into the registry, and lets go of the handles that know they
    lost their permits (their lease ended, or another holder's release took them), whichever
    semaphore they are of. Under ``_lock``."""
    while _dropped:
        ident, native, tokens = _dropped.popleft()
        _kept.setdefault(ident, []).append((native, tokens))
    for ident in list(_kept):
        alive = []
        for native, tokens in _kept[ident]:
            held = {p.token for p in native.held()}
            still = [t for t in tokens if t in held]
            if still:
                alive.append((native, still))
        if alive:
            _kept[ident] = alive
        else:
            del _kept[ident]


def prune() -> None:
    """Lets go of kept handles with nothing left (see ``_settle``): run as objects are made, so
    that a process whose kept permits others release keeps no handle for long."""
    with _lock:
        _settle()


def take(ident: Tuple[Any, ...], n: int) -> Taken:
    """``n`` kept permits of the semaphore, out of the registry, by handle; none when fewer are
    kept (the caller's release then goes as usual, in one call)."""
    with _lock:
        _settle()
        handles = _kept.get(ident, [])
        if n < 1 or sum(len(tokens) for _, tokens in handles) < n:
            return []
        taken: Taken = []
        while n > 0:
            native, tokens = handles[0]
            taken.append((native, tokens[:n]))
            if len(tokens) > n:
                handles[0] = (native, tokens[n:])
            else:
                handles.pop(0)
            n -= len(taken[-1][1])
        if not handles:
            del _kept[ident]
        return taken


def put_back(ident: Tuple[Any, ...], taken: Taken) -> None:
    """Hands back permits ``take`` gave out that a release interrupted before it reached them.
    Takes no lock (it may run on a thread inside ``take``, through a signal's handler)."""
    for native, tokens in taken:
        _dropped.append((ident, native, tokens))
