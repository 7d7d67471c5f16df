"""Authentication, access rules and TLS with the Python clients of each
protocol (paho-mqtt, nats-py, redis-py).

Usage: auth_checks.py SCENARIO PORT [CERT_DIR]. Exits 0 and prints "ok" when
the scenario passes. The broker's users (see tests/tests/auth.rs): alice /
wonderland and bob / builder, allowed `users/%u/#` and `public/#`; dev /
devpass, allowed `devices/%c/#`; default / hunter2 (Redis AUTH with a
password only); svc with token s3rvice-token. Anonymous clients may use
`public/#` only. CERT_DIR holds ca.pem, alice.pem and alice.key.
"""

import asyncio
import os
import queue
import ssl
import sys

# The paho wrapper of the MQTT scenarios (this script's directory is on sys.path).
from mqtt_checks import HOST, TIMEOUT, Conn


ALICE = ("alice", "wonderland")
BOB = ("bob", "builder")


def mqtt_acl_v5(port):
    alice = Conn(port, user=ALICE)
    bob = Conn(port, user=BOB)
    assert bob.subscribe("users/bob/#", qos=1) == [1]
    assert alice.subscribe("users/bob/#", qos=1) == [0x87], "another user's topics"
    assert alice.subscribe("#", qos=1) == [0x87], "wider than the rules"
    assert alice.subscribe("users/alice/#", qos=1) == [1]
    rc = alice.publish("users/bob/inbox", b"forged", qos=1)
    assert rc.value == 0x87, rc
    bob.quiet()
    assert alice.publish("users/alice/x", b"mine", qos=1).value in (0x00, 0x10)
    assert alice.take(1)[0].payload == b"mine"
    # Rules of one user do not leak into the other's: bob may not write to alice.
    assert bob.publish("users/alice/x", b"forged", qos=1).value == 0x87
    alice.quiet()
    alice.disconnect()
    bob.disconnect()


def mqtt_acl_v311(port):
    alice = Conn(port, user=ALICE, version=4)
    assert alice.subscribe("users/bob/#", qos=1) == [0x80]
    bob = Conn(port, user=BOB, version=4)
    bob.subscribe("users/bob/#", qos=1)
    alice.publish("users/bob/inbox", b"forged", qos=1)  # 3.1.1 cannot refuse: acknowledged, dropped
    bob.quiet()
    alice.disconnect()
    bob.disconnect()


def mqtt_client_id_rules(port):
    dev = Conn(port, user=("dev", "devpass"), client_id="d1")
    watcher = Conn(port, user=ALICE)
    assert dev.publish("devices/d1/temp", b"21", qos=1).value in (0x00, 0x10)
    assert dev.publish("devices/d2/temp", b"forged", qos=1).value == 0x87
    assert dev.subscribe("devices/d1/#", qos=1) == [1]
    assert dev.subscribe("devices/+/temp", qos=1) == [0x87]
    dev.disconnect()
    watcher.disconnect()


def mqtt_refusals(port):
    wrong = Conn(port, user=("alice", "guess"), expect_refusal=True)
    assert wrong.reason.value == 0x87, wrong.reason
    wrong.c.loop_stop()
    nobody = Conn(port, user=None, expect_refusal=True)
    assert nobody.reason.value == 0x87, nobody.reason
    nobody.c.loop_stop()
    old = Conn(port, user=("alice", "guess"), version=4, expect_refusal=True)
    assert old.reason.value in (5, 0x87) and str(old.reason) == "Not authorized", old.reason  # paho maps 3.1.1 code 5
    old.c.loop_stop()


def mqtt_anonymous(port):
    anon = Conn(port)
    alice = Conn(port, user=ALICE)
    assert anon.subscribe("public/#", qos=1) == [1]
    assert anon.subscribe("users/alice/#", qos=1) == [0x87]
    assert anon.publish("users/alice/x", b"forged", qos=1).value == 0x87
    alice.publish("public/news", b"hello all", qos=1)
    assert anon.take(1)[0].payload == b"hello all"
    anon.disconnect()
    alice.disconnect()


def certs(cert_dir):
    return {name: os.path.join(cert_dir, name) for name in ("ca.pem", "alice.pem", "alice.key")}


def mqtt_tls_password(port, cert_dir):
    files = certs(cert_dir)
    alice = Conn(port, user=ALICE, tls={"ca_certs": files["ca.pem"]})
    alice.subscribe("users/alice/#", qos=1)
    alice.publish("users/alice/tls", b"encrypted", qos=1)
    assert alice.take(1)[0].payload == b"encrypted"
    alice.disconnect()


def mqtt_tls_client_certificate(port, cert_dir):
    files = certs(cert_dir)
    tls = {"ca_certs": files["ca.pem"], "certfile": files["alice.pem"], "keyfile": files["alice.key"]}
    # No password: the certificate's common name (alice) is the user, with alice's rules.
    alice = Conn(port, user=None, tls=tls)
    assert alice.subscribe("users/alice/#", qos=1) == [1]
    assert alice.subscribe("users/bob/#", qos=1) == [0x87]
    alice.disconnect()


def mqtt_tls_requires_certificate(port, cert_dir):
    files = certs(cert_dir)
    try:
        Conn(port, user=ALICE, tls={"ca_certs": files["ca.pem"]})
    except (ssl.SSLError, ConnectionError, OSError, queue.Empty):
        return
    raise AssertionError("a client without a certificate got in")


def mqtt_websocket_tls(port, cert_dir):
    files = certs(cert_dir)
    alice = Conn(port, user=ALICE, tls={"ca_certs": files["ca.pem"]}, transport="websockets")
    alice.subscribe("users/alice/#", qos=1)
    alice.publish("users/alice/wss", b"over wss", qos=1)
    assert alice.take(1)[0].payload == b"over wss"
    alice.disconnect()


def nats_auth(port):
    import nats

    async def run():
        nc = await nats.connect(f"nats://alice:wonderland@{HOST}:{port}", connect_timeout=TIMEOUT,
                                allow_reconnect=False)
        sub = await nc.subscribe("users.alice.>")
        await nc.publish("users.alice.x", b"hi")
        assert (await sub.next_msg(timeout=TIMEOUT)).data == b"hi"
        await nc.close()
        nc = await nats.connect(f"nats://s3rvice-token@{HOST}:{port}", connect_timeout=TIMEOUT,
                                allow_reconnect=False)
        await nc.flush(timeout=TIMEOUT)
        await nc.close()
        errors = []

        async def on_error(e):
            errors.append(str(e))

        refused = None
        try:
            nc = await nats.connect(f"nats://alice:guess@{HOST}:{port}", connect_timeout=TIMEOUT,
                                    allow_reconnect=False, max_reconnect_attempts=0, error_cb=on_error)
            await nc.close()
        except Exception as e:  # nats-py raises its own error types for a refused CONNECT
            refused = e
        assert refused is not None, "a wrong password got in"
        text = " ".join(errors + [str(refused)]).lower()
        assert "authorization violation" in text, text

    asyncio.run(asyncio.wait_for(run(), 20))


def redis_auth(port):
    import redis

    r = redis.Redis(host=HOST, port=port, password="hunter2", socket_timeout=TIMEOUT)
    assert r.ping()
    r.set("k", "v")
    assert r.get("k") == b"v"
    named = redis.Redis(host=HOST, port=port, username="alice", password="wonderland", socket_timeout=TIMEOUT)
    assert named.ping()
    try:
        redis.Redis(host=HOST, port=port, socket_timeout=TIMEOUT).ping()
        raise AssertionError("a client without AUTH ran a command")
    except redis.exceptions.AuthenticationError as e:
        assert "authentication required" in str(e).lower(), e
    except redis.exceptions.ResponseError as e:
        assert "NOAUTH" in str(e), e
    try:
        redis.Redis(host=HOST, port=port, password="guess", socket_timeout=TIMEOUT).ping()
        raise AssertionError("a wrong password got in")
    except redis.exceptions.AuthenticationError as e:
        assert "invalid username-password pair" in str(e), e


SCENARIOS = {f.__name__: f for f in [mqtt_acl_v5, mqtt_acl_v311, mqtt_client_id_rules, mqtt_refusals, mqtt_anonymous,
                                     mqtt_tls_password, mqtt_tls_client_certificate, mqtt_tls_requires_certificate,
                                     mqtt_websocket_tls, nats_auth, redis_auth]}

if __name__ == "__main__":
    name, port, rest = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    SCENARIOS[name](port, *rest)
    print("ok")
