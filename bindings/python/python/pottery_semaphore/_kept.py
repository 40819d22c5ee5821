"""Permits whose semaphore object went away while holding them.

In the original library a permit belonged to the semaphore in Redis, not to the object that took
it: one object could acquire and be dropped, and another with the same key release later (a
start hook and a finish hook, say). Here each object is a holder that refreshes its permits'
leases, and one that was dropped gave its permits back at once, letting one holder too many in
while the code that acquired them still ran. So an object that goes while holding permits leaves
its native handle here: those permits stay held, and refreshed, while this process lives (or
until their lease is lost). A ``release(n)`` of the same semaphore in this process, by an object
that holds none itself, gives these back first when there are at least ``n`` of them.
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
# What finalizers hand over: they never take ``_lock`` (a garbage collection may run one on a
# thread that holds it), and ``deque.append`` is atomic.
_dropped: Deque[Tuple[int, Tuple[Any, ...], Any, List[int]]] = collections.deque()
_pid = os.getpid()


def _server(url: str) -> Tuple[Any, ...]:
    """The server and database a URL names, however it is spelled (a client's URL ends in its
    db, a string may not; ``localhost`` and ``127.0.0.1`` stay apart)."""
    try:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if parts.scheme in ("unix", "redis+unix", "valkey+unix"):
            return ("unix", parts.path, int(query.get("db", ["0"])[0]))
        db = parts.path.strip("/") or query.get("db", ["0"])[0]
        return ("tcp", (parts.hostname or "").lower(), parts.port or 6379, int(db))
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
            _dropped.append((os.getpid(), ident, native, tokens))
    except Exception:  # finalizing: at interpreter exit, the module's names may be gone
        pass


def _settle() -> None:
    """Moves what finalizers handed over into the registry (under ``_lock``); in a forked
    child, forgets the parent's handles, whose permits are the parent's."""
    global _pid
    if os.getpid() != _pid:
        _kept.clear()
        _pid = os.getpid()
    while _dropped:
        pid, ident, native, tokens = _dropped.popleft()
        if pid == _pid:
            _kept.setdefault(ident, []).append((native, tokens))


def take(ident: Tuple[Any, ...], n: int) -> Taken:
    """``n`` kept permits of the semaphore, out of the registry, by handle; none when fewer are
    kept (the caller's release then goes as usual, in one call). Handles that know they lost
    theirs (their lease ended, or another holder's release took them) are let go."""
    with _lock:
        _settle()
        handles = _kept.get(ident, [])
        alive: List[Tuple[Any, List[int]]] = []
        for native, tokens in handles:
            held = {p.token for p in native.held()}
            tokens = [t for t in tokens if t in held]
            if tokens:
                alive.append((native, tokens))
        taken: Taken = []
        if n >= 1 and sum(len(tokens) for _, tokens in alive) >= n:
            while n > 0:
                native, tokens = alive[0]
                taken.append((native, tokens[:n]))
                if len(tokens) > n:
                    alive[0] = (native, tokens[n:])
                else:
                    alive.pop(0)
                n -= len(taken[-1][1])
        if alive:
            _kept[ident] = alive
        else:
            _kept.pop(ident, None)
    return taken
