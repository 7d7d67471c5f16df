"""Redis scenarios run with redis-py.

Usage: redis_checks.py SCENARIO PORT. Prints "ok" when the scenario passes.
"""

import sys
import time

import redis


def client(port, **options):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, **options)


def wait_message(pubsub, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            return message
    raise AssertionError("no message")


def wait_until(condition, what, timeout=5):
    """Poll `condition` until it holds; the broker acts on another connection."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def keys(port):
    r = client(port)
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.set("k", "v") is True and r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("absent", "x", xx=True) is None
    assert r.set("k", "w", xx=True) is True and r.get("k") == b"w"
    assert r.exists("k", "absent", "k") == 2
    assert r.ttl("k") == -1 and r.ttl("absent") == -2
    assert r.set("t", "1", px=150) is True
    assert 0 < r.pttl("t") <= 150
    time.sleep(0.2)
    assert r.get("t") is None
    assert r.expire("k", 100) is True and 99 <= r.ttl("k") <= 100
    assert r.incr("n") == 1 and r.incrby("n", 10) == 11 and r.decr("n") == 10
    try:
        r.incr("k")
        raise AssertionError("INCR on text")
    except redis.ResponseError as e:
        assert "not an integer" in str(e), e
    assert r.delete("k", "n", "absent") == 2
    r.select(1)
    assert r.get("k") is None and r.set("k", "db1") and r.dbsize() == 1
    r.flushdb()
    assert r.dbsize() == 0


def pipelining(port):
    r = client(port)
    pipe = r.pipeline(transaction=False)
    for i in range(100):
        pipe.set(f"p{i}", i)
        pipe.incr("counter")
    pipe.get("p42")
    results = pipe.execute()
    assert results[-1] == b"42" and results[-2] == 100, results[-3:]


def pubsub(port):
    sub = client(port).pubsub()
    sub.subscribe("news")
    sub.psubscribe("sport.*")
    publisher = client(port)
    assert publisher.publish("news", "hello") == 1
    message = wait_message(sub)
    assert message["type"] == "message" and message["channel"] == b"news" and message["data"] == b"hello", message
    assert publisher.publish("sport.tennis", "ace") == 1
    message = wait_message(sub)
    assert message["type"] == "pmessage" and message["pattern"] == b"sport.*", message
    assert message["channel"] == b"sport.tennis" and message["data"] == b"ace", message
    assert publisher.publish("nobody", "x") == 0
    assert set(publisher.pubsub_channels()) == {b"news"}
    assert publisher.pubsub_numsub("news", "nobody") == [(b"news", 1), (b"nobody", 0)]
    assert publisher.pubsub_numpat() == 1
    sub.unsubscribe("news")
    sub.punsubscribe()
    wait_until(lambda: publisher.pubsub_numsub("news") == [(b"news", 0)] and publisher.pubsub_numpat() == 0,
               "the unsubscriptions")
    assert publisher.publish("news", "gone") == 0


def resp3(port):
    r = client(port, protocol=3)
    assert r.set("k3", "v") and r.get("k3") == b"v"
    assert r.get("missing3") is None
    received = []
    sub = r.pubsub()
    sub.subscribe(**{"push": lambda m: received.append(m)})
    publisher = client(port)
    deadline = time.time() + 5
    while publisher.publish("push", "via resp3") == 0 and time.time() < deadline:
        sub.get_message(timeout=0.05)
    while not received and time.time() < deadline:
        sub.get_message(timeout=0.1)
    assert received and received[0]["data"] == b"via resp3", received


def errors(port):
    r = client(port)
    try:
        r.execute_command("NOSUCHCMD", "a")
        raise AssertionError("unknown command accepted")
    except redis.ResponseError as e:
        assert str(e).startswith("unknown command 'NOSUCHCMD'"), e
    try:
        r.execute_command("GET")
        raise AssertionError("wrong arity accepted")
    except redis.ResponseError as e:
        assert "wrong number of arguments for 'get' command" in str(e), e


def clients(port):
    a = client(port)
    b = client(port)
    a.client_setname("alpha")
    assert a.client_getname() == "alpha"
    b_id = b.client_id()
    names = [c.get("name") for c in a.client_list()]
    assert "alpha" in names, names
    assert a.client_kill_filter(_id=b_id) == 1
    # redis-py reconnects by itself; the killed connection is gone from the list.
    wait_until(lambda: b_id not in [int(c["id"]) for c in a.client_list()], "the killed client to leave the list")
    assert a.client_kill_filter(_id=b_id) == 0


SCENARIOS = {f.__name__: f for f in [keys, pipelining, pubsub, resp3, errors, clients]}

if __name__ == "__main__":
    scenario, port = sys.argv[1], int(sys.argv[2])
    SCENARIOS[scenario](port)
    print("ok")
