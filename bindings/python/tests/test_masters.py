"""redis-py clients as masters: their connection details become URLs."""

from __future__ import annotations

import redis
import redis.asyncio

from pottery_semaphore import Semaphore
from pottery_semaphore._masters import DEFAULT_URL, client_url, master_urls


def test_client_urls():
    assert client_url(redis.Redis(host="h", port=7, db=3)) == "redis://h:7/3"
    assert client_url(redis.Redis(host="h", username="u", password="p@ss")) == "redis://u:p%40ss@h:6379/0"
    assert client_url(redis.Redis(host="h", password="p")) == "redis://:p@h:6379/0"
    assert client_url(redis.asyncio.Redis(host="h", port=9)) == "redis://h:9/0"
    assert client_url(redis.Redis(unix_socket_path="/tmp/r.sock", db=2)) == "unix:///tmp/r.sock?db=2"
    assert client_url(redis.Redis(host="h", ssl=True)) == "rediss://h:6379/0"
    assert client_url(redis.Redis(host="h", ssl=True, ssl_cert_reqs="none")) == "rediss://h:6379/0#insecure"
    assert master_urls([]) == [DEFAULT_URL]
    assert master_urls(["redis://a:1", "redis://a:1"]) == ["redis://a:1"]


def test_a_client_with_a_db_and_a_password_reaches_the_same_semaphore_as_its_url(unique_key):
    from conftest import Server

    server = Server("--requirepass", "pw")
    try:
        client = server.client(password="pw", db=4)
        a = Semaphore(value=1, key=unique_key, masters={client}, guard_fresh_server=False)
        b = Semaphore(value=1, key=unique_key, masters={f"redis://:pw@127.0.0.1:{server.port}/4"}, guard_fresh_server=False)
        assert a.acquire()
        assert not b.acquire(blocking=False)
        assert client.exists(f"pottery-semaphore:{{{unique_key}}}:meta"), "the semaphore lives in db 4"
    finally:
        server.close()
