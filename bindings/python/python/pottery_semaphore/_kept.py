"""Permits whose semaphore object went away while holding them.

In the original library a permit belonged to the semaphore in Redis, not to the object that took
it: one object could acquire and be dropped, and another with the same key release later (a
start hook and a finish hook, say). Here each object is a holder that refreshes its permits'
leases, and one that was dropped gave its permits back at once, letting one holder too many in
while the code that acquired them still ran. So an object that goes while holding permits leaves
its native handle here: those permits stay held, and refreshed, while this process lives (or
until their lease is lost). A ``release()`` of the same semaphore in this process, by an object
that holds none itself, gives these back first, before any other holder's.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Tuple

_lock = threading.Lock()
# Semaphore (see ``identity``) -> the handles kept, each with the tokens it still holds for us.
_kept: Dict[Tuple[Any, ...], List[Tuple[Any, List[int]]]] = {}
_pid = os.getpid()


def identity(options: Any) -> Tuple[Any, ...]:
    """What tells one semaphore from another: its key on its servers."""
    return (options.key, options.url, tuple(options.more_masters), options.cluster)


def keep(ident: Tuple[Any, ...], native: Any) -> None:
    """Keeps ``native`` if it holds permits, for an object being finalized. Never raises."""
    global _pid
    try:
        tokens = [p.token for p in native.held()]
        if not tokens:
            return
        with _lock:
            if os.getpid() != _pid:
                # A forked child: the handles kept are the parent's, and so are their permits.
                _kept.clear()
                _pid = os.getpid()
            _kept.setdefault(ident, []).append((native, tokens))
    except Exception:  # finalizing: at interpreter exit, the module's names may be gone
        pass


def take(ident: Tuple[Any, ...], n: int) -> List[Tuple[Any, List[int]]]:
    """Up to ``n`` kept permits of the semaphore, out of the registry, by handle; a handle
    with none left is let go once its permits are released (see ``put_back``). One whose lease
    was lost meanwhile still counts: its release gives back nothing, rather than another
    holder's permit in its place (as in the original, where it would still be held)."""
    taken: List[Tuple[Any, List[int]]] = []
    with _lock:
        if os.getpid() != _pid:
            return taken
        handles = _kept.get(ident, [])
        while n > 0 and handles:
            native, tokens = handles[0]
            some, rest = tokens[:n], tokens[n:]
            taken.append((native, some))
            n -= len(some)
            if rest:
                handles[0] = (native, rest)
            else:
                handles.pop(0)
        if not handles:
            _kept.pop(ident, None)
    return taken


def put_back(ident: Tuple[Any, ...], taken: List[Tuple[Any, List[int]]]) -> None:
    """Returns permits ``take`` gave out and that were not released after all."""
    with _lock:
        if taken and os.getpid() == _pid:
            _kept.setdefault(ident, [])[:0] = taken


def count(taken: List[Tuple[Any, List[int]]]) -> int:
    return sum(len(tokens) for _, tokens in taken)
