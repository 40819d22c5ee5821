"""redis-py clients as masters: their connection details become URLs."""

from __future__ import annotations

import time

import pytest
import redis
import redis.asyncio
import redis.sentinel

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
    # What cannot be carried over is refused, not dropped: a Sentinel-managed pool names no host
    # (it must not become localhost), and TLS files have no place in a URL.
    with pytest.raises(TypeError, match="names no host"):
        client_url(redis.sentinel.Sentinel([("localhost", 1)]).master_for("mymaster"))
    with pytest.raises(TypeError, match="ssl_ca_certs"):
        client_url(redis.Redis(host="h", ssl=True, ssl_ca_certs="/tmp/ca.pem"))
    # A credential provider's credentials, not none: the URL must not connect unauthenticated.
    provider = redis.UsernamePasswordCredentialProvider("u", "s3cret")
    assert client_url(redis.Redis(host="h", credential_provider=provider)) == "redis://u:s3cret@h:6379/0"
    assert client_url(redis.Redis(unix_socket_path="/tmp/a b#1.sock")) == "unix:///tmp/a%20b%231.sock?db=0"
    assert master_urls([]) == [DEFAULT_URL]
    # As the original's frozenset: one entry given twice is one master.
    assert master_urls(["redis://a:1", "redis://a:1"]) == ["redis://a:1"]
    one = redis.Redis(host="a", port=1)
    assert master_urls([one, one]) == ["redis://a:1/0"]
    assert master_urls([one, redis.Redis(host="a", port=1)]) == ["redis://a:1/0", "redis://a:1/0"]


def test_one_server_given_twice_is_refused(server, unique_key):
    # As a client and as its URL, or as two clients: two votes of one server in the quorum.
    from pottery_semaphore import InvalidArgumentError

    for masters in ([server.client(), server.url], [server.client(), server.client()]):
        with pytest.raises(InvalidArgumentError, match="listed twice"):
            Semaphore(value=1, key=unique_key, masters=masters, guard_fresh_server=False)
    # One entry given twice is one master, as in the original (a frozenset of them).
    client = server.client()
    for masters in ([client, client], [server.url, server.url]):
        sem = Semaphore(value=1, key=unique_key, masters=masters, guard_fresh_server=False)
        assert sem.acquire(blocking=False)
        sem.release()
    # The message names the URLs without their password.
    with_password = server.url.replace("redis://", "redis://:s3cret@")
    with pytest.raises(InvalidArgumentError, match="listed twice") as refused:
        Semaphore(value=1, key=unique_key, masters=[with_password, with_password + "/0"], guard_fresh_server=False)
    assert "s3cret" not in str(refused.value)


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


def test_several_masters_hold_each_permit_on_a_majority(unique_key):
    import pytest
    from conftest import start_servers

    from pottery_semaphore import AIOSemaphore, QuorumIsImpossible, RedisUnavailableError

    servers = start_servers(3)
    try:
        clients = [s.client() for s in servers]
        a = Semaphore(value=2, key=unique_key, masters=clients, guard_fresh_server=False)
        b = Semaphore(value=2, key=unique_key, masters=[f"redis://127.0.0.1:{s.port}" for s in servers], guard_fresh_server=False)
        assert a.acquire() and b.acquire()
        assert not b.acquire(blocking=False)
        assert a.value == 0
        for client in clients:
            assert client.hlen(f"pottery-semaphore:{{{unique_key}}}:owner") == 2, "every master records both slots"
        a.release()
        assert b.acquire(timeout=1)
        b.release(2)
        servers[2].kill()
        with b:
            assert b.value == 1, "two of three masters are a majority"
        servers[1].kill()
        assert not b.acquire(timeout=0.3), "no majority: not acquired"
        with pytest.raises(QuorumIsImpossible) as raised:
            # Opening needs a majority too, so it is the constructor that raises here.
            Semaphore(value=2, key=unique_key, masters=clients, raise_on_redis_errors=True).acquire(blocking=False)
        assert isinstance(raised.value, RedisUnavailableError), "callers catching the broad error still do"
        assert "2 of 3 masters failed" in str(raised.value)
        assert isinstance(AIOSemaphore(key=unique_key, masters=clients), AIOSemaphore)
    finally:
        for s in servers:
            s.close()


def test_ctrl_c_ends_a_wait_on_several_masters(unique_key):
    """With several masters the wait runs on the library's threads; a signal to the main thread
    still ends it, so that Ctrl-C raises at once instead of when the acquire returns."""
    from conftest import start_servers
    from test_api import _Interrupted, _raise_interrupted, _signal_main_thread_after

    servers = start_servers(3)
    try:
        urls = [f"redis://127.0.0.1:{s.port}" for s in servers]
        holder = Semaphore(key=unique_key, masters=urls, guard_fresh_server=False)
        waiter = Semaphore(key=unique_key, masters=urls, guard_fresh_server=False)
        assert holder.acquire()
        restore = _signal_main_thread_after(0.3, _raise_interrupted)
        started = time.monotonic()
        try:
            with pytest.raises(_Interrupted):
                waiter.acquire(timeout=3)
            waited = time.monotonic() - started
        finally:
            restore()
        assert waited < 1.0, f"the signal ended the wait only after {waited:.2f} s"
        holder.release()
        assert waiter.acquire(timeout=3), "the handle is still usable"
        assert len(waiter.permits) == 1
    finally:
        for s in servers:
            s.close()


def test_a_redis_cluster_through_one_seed_node(unique_key):
    import subprocess

    from conftest import start_servers

    nodes = start_servers(3, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", "{free_port}")
    try:
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        deadline = time.monotonic() + 30
        for n in nodes:
            client = n.client()
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, f"node {n.port} never agreed the cluster was ok"
                time.sleep(0.05)
        sem = Semaphore(value=2, key=unique_key, masters=[nodes[0].url], cluster=True, guard_fresh_server=False)
        other = Semaphore(value=2, key=unique_key, masters=[nodes[2].url], cluster=True, guard_fresh_server=False)
        assert sem.acquire() and other.acquire()
        assert not sem.acquire(blocking=False), "two permits, wherever the handles entered the cluster"
        holding = [n for n in nodes if n.client().keys("pottery-semaphore:*")]
        assert len(holding) == 1, "one node holds every key of the semaphore"
        sem.release()
        other.release()
        assert sem.value == 2
    finally:
        for n in nodes:
            n.close()


def test_replica_acknowledgement_gives_back_what_the_replica_did_not_confirm(unique_key):
    import os
    import signal
    import time

    import pytest
    from conftest import Server

    from pottery_semaphore import NotReplicatedError, ReplicaAck

    primary = Server()
    try:
        replica = Server("--replicaof", "127.0.0.1", str(primary.port))
    except BaseException:
        primary.close()
        raise
    try:
        deadline = time.monotonic() + 10
        while replica.client().info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        sem = Semaphore(value=1, key=unique_key, masters=[primary.url], guard_fresh_server=False,
                        replica_ack=ReplicaAck(replicas=1, timeout=0.2))
        with sem:
            assert sem.value == 0
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(NotReplicatedError):
                sem.acquire()
            assert time.monotonic() - started < 2
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        assert sem.value == 1, "the grant the replica did not confirm was given back"
        with pytest.raises(ValueError):
            Semaphore(key=unique_key, masters=[primary.url], replica_ack=ReplicaAck(timeout=-1))
    finally:
        replica.close()
        primary.close()
