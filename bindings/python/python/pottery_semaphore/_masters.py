"""Turning ``masters`` (redis-py clients or URLs) into the URLs the native layer takes."""

from __future__ import annotations

from typing import Any, Iterable, List, Tuple
from urllib.parse import quote

DEFAULT_URL = "redis://localhost:6379"


def _userinfo(username: Any, password: Any) -> str:
    if not username and not password:
        return ""
    user = quote(str(username or ""), safe="")
    secret = quote(str(password or ""), safe="")
    return f"{user}:{secret}@"


def _credentials(kwargs: Any) -> Tuple[Any, Any]:
    """The client's username and password: from its credential provider when it has one (asked
    once: credentials it rotates later are not followed), else from its pool's settings."""
    provider = kwargs.get("credential_provider")
    if provider is None:
        return kwargs.get("username"), kwargs.get("password")
    try:
        given = tuple(provider.get_credentials())
    except NotImplementedError:  # an asyncio-only provider
        raise TypeError("the client's credential provider has no get_credentials(): pass a URL instead") from None
    if len(given) == 1:
        return None, given[0]
    if len(given) == 2:
        return given
    raise TypeError(f"the client's credential provider gave {len(given)} values, not (password,) or (username, password)")


def client_url(client: Any) -> str:
    """The URL of a ``redis.Redis`` / ``redis.asyncio.Redis`` client, from its connection pool:
    host, port, db, username, password, TLS (``rediss://``) or a unix socket."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs is None:
        raise TypeError(
            f"masters must hold redis.Redis / redis.asyncio.Redis clients or URL strings, "
            f"not {type(client).__name__}"
        )
    username, password = _credentials(kwargs)
    auth = _userinfo(username, password)
    db = int(kwargs.get("db") or 0)
    path = kwargs.get("path")
    if path:
        query = f"?db={db}"
        if username:
            query += "&user=" + quote(str(username), safe="")
        if password:
            query += "&pass=" + quote(str(password), safe="")
        return f"unix://{quote(str(path), safe='/')}{query}"
    host = kwargs.get("host")
    if not host:
        # A Sentinel-managed pool, say, finds its master itself: turning it into localhost would
        # quietly count permits on another server.
        raise TypeError(
            f"the connection pool of {type(client).__name__} names no host (Sentinel?): pass the master's URL instead"
        )
    tls_files = [k for k in ("ssl_ca_certs", "ssl_ca_path", "ssl_ca_data", "ssl_certfile", "ssl_keyfile") if kwargs.get(k)]
    if tls_files:
        raise TypeError(f"TLS settings {', '.join(tls_files)} cannot be carried over from a client: pass a rediss:// URL")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = int(kwargs.get("port") or 6379)
    connection_class = getattr(pool, "connection_class", type(None))
    tls = "SSL" in connection_class.__name__ or bool(kwargs.get("ssl"))
    if not tls:
        return f"redis://{auth}{host}:{port}/{db}"
    # redis-py's ssl_cert_reqs "none" (or ssl.CERT_NONE, 0) skips verification; so must we.
    reqs = kwargs.get("ssl_cert_reqs")
    insecure = reqs in ("none", 0) or str(reqs).lower().endswith("none")
    return f"rediss://{auth}{host}:{port}/{db}" + ("#insecure" if insecure else "")


def master_urls(masters: Iterable[Any]) -> List[str]:
    """URLs of ``masters``; an empty collection means ``redis://localhost:6379`` as in the
    original library. As there (it made a ``frozenset`` of them), an entry given twice (one
    client, one URL string) is one master; two entries that name one server (a client and its
    URL, two clients of one server) stay two, for the semaphore to refuse: they would count as
    two masters of a quorum."""
    if isinstance(masters, (str, bytes)):
        raise TypeError("masters must be a collection of clients or URLs, not a single string")
    urls, seen = [], set()
    for master in masters:
        try:
            entry: Any = master
            if entry in seen:
                continue
        except TypeError:  # unhashable: told apart by identity
            entry = ("id", id(master))
            if entry in seen:
                continue
        seen.add(entry)
        urls.append(master if isinstance(master, str) else client_url(master))
    return sorted(urls) or [DEFAULT_URL]
