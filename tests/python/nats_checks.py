"""NATS scenarios run with the official Python client (nats-py).

Usage: nats_checks.py SCENARIO PORT. Exits 0 and prints "ok" when the
scenario behaves like nats-server; anything else is a failure message.
"""

import asyncio
import sys

import nats
from nats.errors import NoRespondersError, TimeoutError

TIMEOUT = 5


async def connect(port, **options):
    return await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=TIMEOUT, **options)


async def next_msg(sub):
    return await sub.next_msg(timeout=TIMEOUT)


async def pubsub(port):
    nc = await connect(port)
    sub = await nc.subscribe("orders.*")
    await nc.publish("orders.eu", b"hello")
    await nc.publish("other.eu", b"not matched")
    await nc.publish("orders.us", b"")
    msg = await next_msg(sub)
    assert (msg.subject, msg.data) == ("orders.eu", b"hello"), msg
    msg = await next_msg(sub)
    assert (msg.subject, msg.data) == ("orders.us", b""), msg
    await nc.close()


async def wildcards(port):
    nc = await connect(port)
    tail = await nc.subscribe("a.>")
    middle = await nc.subscribe("a.*.c")
    for subject in ["a", "a.b", "a.b.c", "a.b.c.d"]:
        await nc.publish(subject, subject.encode())
    got = [(await next_msg(tail)).subject for _ in range(3)]
    assert got == ["a.b", "a.b.c", "a.b.c.d"], got
    assert (await next_msg(middle)).subject == "a.b.c"
    try:
        extra = await tail.next_msg(timeout=0.3)
        raise AssertionError(f"'a.>' must not match 'a': {extra}")
    except TimeoutError:
        pass
    await nc.close()


async def queue_groups(port):
    nc = await connect(port)
    one = await nc.subscribe("work", queue="workers")
    two = await nc.subscribe("work", queue="workers")
    plain = await nc.subscribe("work")
    await nc.flush()
    for i in range(10):
        await nc.publish("work", str(i).encode())
    await nc.flush()
    counts = lambda: (one.pending_msgs, two.pending_msgs, plain.pending_msgs)
    for _ in range(TIMEOUT * 20):
        if counts()[0] + counts()[1] >= 10 and counts()[2] >= 10:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)  # room for a wrong extra copy to show
    counts = counts()
    assert counts[0] + counts[1] == 10 and counts[0] > 0 and counts[1] > 0, counts
    assert counts[2] == 10, counts
    await nc.close()


async def request_reply(port):
    responder = await connect(port)

    async def answer(msg):
        await msg.respond(b"re: " + msg.data)

    await responder.subscribe("svc.echo", cb=answer)
    await responder.flush()
    requester = await connect(port)
    reply = await requester.request("svc.echo", b"ping", timeout=TIMEOUT)
    assert reply.data == b"re: ping", reply
    try:
        await requester.request("nobody.home", b"?", timeout=TIMEOUT)
        raise AssertionError("expected no responders")
    except NoRespondersError:
        pass
    await requester.close()
    await responder.close()


async def headers(port):
    nc = await connect(port)
    sub = await nc.subscribe("h.test")
    await nc.publish("h.test", b"body", headers={"X-Trace": "abc", "X-Other": "1 2"})
    msg = await next_msg(sub)
    assert msg.data == b"body", msg
    assert msg.headers == {"X-Trace": "abc", "X-Other": "1 2"}, msg.headers
    await nc.close()


async def unsub_max(port):
    nc = await connect(port)
    sub = await nc.subscribe("limited")
    await sub.unsubscribe(limit=2)
    for i in range(5):
        await nc.publish("limited", str(i).encode())
    await nc.flush()
    await asyncio.sleep(0.3)
    got = []
    while True:
        try:
            got.append((await sub.next_msg(timeout=0.2)).data)
        except Exception:
            break
    assert got == [b"0", b"1"], got
    await nc.close()


async def no_echo(port):
    nc = await connect(port, no_echo=True)
    sub = await nc.subscribe("self")
    await nc.publish("self", b"mine")
    other = await connect(port)
    await other.publish("self", b"theirs")
    msg = await next_msg(sub)
    assert msg.data == b"theirs", msg
    await nc.close()
    await other.close()


async def ping_and_info(port):
    nc = await connect(port, name="probe")
    await nc.flush(timeout=TIMEOUT)
    info = nc._server_info
    assert info["proto"] == 1 and info["headers"] is True, info
    assert info["max_payload"] >= 1024 and "server_id" in info and "client_id" in info, info
    assert nc.max_payload == info["max_payload"]
    try:
        await nc.publish("big", b"x" * (info["max_payload"] + 1))
        raise AssertionError("the client should refuse an oversized payload")
    except Exception as e:
        assert "payload" in str(e).lower(), e
    await nc.close()


SCENARIOS = {f.__name__: f for f in [pubsub, wildcards, queue_groups, request_reply, headers, unsub_max, no_echo, ping_and_info]}

if __name__ == "__main__":
    scenario, port = sys.argv[1], int(sys.argv[2])
    asyncio.run(asyncio.wait_for(SCENARIOS[scenario](port), 20))
    print("ok")
