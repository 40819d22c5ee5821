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

Signals: Python runs a signal's handler between any two steps, also on a thread that is inside
this module. Nothing here waits for a lock that thread may hold (a re-entrant lock, and a flag
that makes a nested call do nothing), and what is handed over goes through a deque: an entry
may be filed twice, never lost (the registry keeps one entry per handle). A finalizer files its
handle in one step (see ``keep``).
"""

from __future__ import annotations

import collections
import ctypes
import os
import threading
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ._native import pottery_semaphore_ffi as _ffi

Taken = List[Tuple[Any, List[int]]]

_lock = threading.RLock()
# True while a thread works on the registry under ``_lock``: only that thread can see it so (it
# holds the lock), from a signal's handler that made or released a semaphore.
_busy = False
# A weak reference to the object a handle was kept from (see ``keep``), or None.
Owner = Optional["weakref.ReferenceType[Any]"]
# Semaphore (see ``identity``) -> id(handle) -> (the handle, the tokens it still holds for us,
# its object).
_kept: Dict[Tuple[Any, ...], Dict[int, Tuple[Any, List[int], Owner]]] = {}
# What finalizers and interrupted releases hand over: they never wait for ``_lock`` (a garbage
# collection may run a finalizer on a thread that holds it), and ``deque.append`` is atomic.
# (semaphore, the handle or a finalizer's raw spare handle, its tokens or None: to be read, its
# object).
_dropped: Deque[Tuple[Tuple[Any, ...], Any, Optional[List[int]], Owner]] = collections.deque()


def _forget_the_parents() -> None:
    global _lock, _busy
    _lock, _busy = threading.RLock(), False  # another thread of the parent may have held it
    # Not freed even at the child's exit, when the interpreter clears every module: freeing one
    # gives its permits back on the parent's runtime, copied with locks its threads may hold.
    # (A raw spare handle is freed only once wrapped: forgetting it is enough.)
    for entry in [*(h for handles in _kept.values() for h, _, _ in handles.values()), *(d[1] for d in _dropped)]:
        if not isinstance(entry, int):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(entry))
    _kept.clear()
    _dropped.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_the_parents)


def _server(url: str) -> Tuple[Any, ...]:
    """The server and database a URL names as the native client reads it, however it is spelled
    (a client's URL ends in its db, a string may not; ``localhost`` and ``127.0.0.1`` stay
    apart). The db is the path's for TCP (a ``?db=`` there is not read), the query's last for
    unix."""
    try:
        parts = urlsplit(url)
        if parts.scheme in ("unix", "redis+unix", "valkey+unix"):
            return ("unix", parts.path, int(parse_qs(parts.query).get("db", ["0"])[-1]))
        return ("tcp", parts.scheme in ("rediss", "valkeys"), (parts.hostname or "").lower(), parts.port or 6379,
                int(parts.path.strip("/") or "0"))
    except ValueError:
        return ("url", url)


def identity(options: Any) -> Tuple[Any, ...]:
    """What tells one semaphore from another: its key on its servers."""
    servers = sorted((_server(u) for u in [options.url, *options.more_masters]), key=repr)
    return (options.key, tuple(servers), options.cluster)


def spare_handle(native: Any) -> int:
    """A second reference to ``native``'s Rust handle, taken as an object is made, for ``keep``.
    An object and its native handle that a garbage collection finds in a reference cycle are
    finalized in any order: the native one may be freed before the object's finalizer runs, so
    that finalizer must not touch it. (Through the generated module's own clone and wrap
    functions, of the pinned UniFFI.)"""
    return native._uniffi_clone_handle()


def keep(ident: Tuple[Any, ...], handle: int, owner: Any) -> None:
    """For ``owner``, an object being finalized, with its ``spare_handle``: files it in one step
    (an append), so that a signal's handler that raises in the finalizer finds it filed, or, in
    the instant before, not filed and never freed (its permits then stay held while the process
    lives); ``_settle`` wraps it and reads its permits. The object's own handle, which its
    wrapper may have freed already, stays valid only while this one lives, so this one is kept
    while the object lives: other finalizers of the same collection (a coroutine closed,
    leaving its ``async with``) may still call it, and one of them may keep it for good
    (resurrect it). Takes no lock."""
    _dropped.append((ident, handle, None, weakref.ref(owner)))


def _alive(owner: Owner) -> bool:
    return owner is not None and owner() is not None


class KeptWhenDropped:
    """Base of both semaphore classes: one finalized while it holds permits leaves them kept
    (``keep``). They set ``_kept_as`` (``identity``) and ``_fork``, and ``_spare``
    (``spare_handle``) once their native handle is open."""

    _spare: Optional[int] = None

    def __del__(self) -> None:
        spare, fork = getattr(self, "_spare", None), getattr(self, "_fork", None)
        if spare is not None and fork is not None and not fork.forked():
            try:
                keep(self._kept_as, spare, self)
            except Exception:  # at interpreter exit, the module's names may be gone
                pass


def _settle() -> None:
    """Moves what was handed over into the registry (an entry leaves the deque only once it is
    in), and lets go of the handles that know they lost their permits (their lease ended, or
    another holder's release took them) and whose object is gone, whichever semaphore they are
    of. Under ``_lock``."""
    while _dropped:
        ident, native, tokens, owner = _dropped[0]
        if isinstance(native, int):
            # A finalizer's spare handle: the wrapper owns it from here on, and replaces it in
            # the entry in the same step (no signal's handler runs in between).
            _dropped[0] = (ident, _ffi.Semaphore._uniffi_make_instance(native), None, owner)
            continue
        if tokens is None:
            tokens = [p.token for p in native.held()]
        _, already, was = _kept.setdefault(ident, {}).get(id(native), (native, [], None))
        known = set(already)
        _kept[ident][id(native)] = (native, already + [t for t in tokens if t not in known], owner or was)
        _dropped.popleft()
    for ident in list(_kept):
        handles = _kept[ident]
        for key, (native, tokens, owner) in list(handles.items()):
            held = [p.token for p in native.held()]
            if owner is not None:
                # Its object outlived its finalizer (another kept it) until now at most: what
                # it holds counts as kept, as what it held when it was finalized would have.
                tokens = held
                owner = owner if _alive(owner) else None
            holding = set(held)
            still = [t for t in tokens if t in holding]
            if still or owner is not None:
                handles[key] = (native, still, owner)
            else:
                del handles[key]
        if not handles:
            del _kept[ident]


def prune() -> None:
    """Lets go of kept handles with nothing left (see ``_settle``): run as objects are made, so
    that a process whose kept permits others release keeps no handle for long."""
    global _busy
    with _lock:
        if _busy:
            return  # a signal's handler, inside this thread's own prune() or take()
        _busy = True
        try:
            _settle()
        finally:
            _busy = False


def take(ident: Tuple[Any, ...], n: int) -> Taken:
    """``n`` kept permits of the semaphore, out of the registry, by handle; none when fewer are
    kept (the caller's release then goes as usual, in one call), or when called from a signal's
    handler inside this thread's own ``take()`` or ``prune()``."""
    global _busy
    with _lock:
        if _busy:
            return []
        _busy = True
        try:
            _settle()
            handles = _kept.get(ident, {})
            if n < 1 or sum(len(tokens) for _, tokens, _ in handles.values()) < n:
                return []
            taken: Taken = []
            for key, (native, tokens, owner) in list(handles.items()):
                if n == 0:
                    break
                if not tokens:
                    continue
                taken.append((native, tokens[:n]))
                if len(tokens) > n:
                    handles[key] = (native, tokens[n:], owner)
                elif _alive(owner):
                    handles[key] = (native, [], owner)
                else:
                    del handles[key]
                n -= len(taken[-1][1])
            if not handles:
                del _kept[ident]
            return taken
        finally:
            _busy = False


def put_back(ident: Tuple[Any, ...], taken: Taken) -> None:
    """Hands back permits ``take`` gave out that a release may not have reached (those it did
    reach are no longer held, and ``_settle`` drops them). Takes no lock."""
    for native, tokens in taken:
        _dropped.append((ident, native, tokens, None))
