"""python3-etcd3 against a goray head's coordination service, with the
cluster's etcd credentials (GORAY_TEST_ETCD_* set by tests/clients)."""

import os
import threading
import unittest

import etcd3
import grpc


def endpoint():
    host_port = os.environ["GORAY_TEST_ETCD_ENDPOINTS"].split(",")[0].split("://")[-1]
    host, port = host_port.rsplit(":", 1)
    return host, int(port)


def client(user=None, password=None):
    """An etcd3 client with a user and password on the plaintext loopback
    endpoint. python3-etcd3 sends its auth token as call credentials, which
    current grpc refuses on an insecure channel; a channel with grpc's local
    credentials (loopback TCP) carries them. docs/clients.md shows the same."""
    host, port = endpoint()

    def local_channel(target, options=None, compression=None):
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        return grpc.secure_channel(target, creds, options=options, compression=compression)

    insecure, grpc.insecure_channel = grpc.insecure_channel, local_channel
    try:
        return etcd3.client(
            host=host,
            port=port,
            user=user or os.environ["GORAY_TEST_ETCD_USER"],
            password=password or os.environ["GORAY_TEST_ETCD_PASSWORD"],
        )
    finally:
        grpc.insecure_channel = insecure


class Etcd3Test(unittest.TestCase):
    def test_put_get_watch_lock(self):
        c = client()
        c.put("/py/k", "v1")
        value, meta = c.get("/py/k")
        self.assertEqual(value, b"v1")

        events, cancel = c.watch("/py/w")
        got = []

        def read():
            for ev in events:
                got.append(ev.value)
                break

        t = threading.Thread(target=read)
        t.start()
        c.put("/py/w", "changed")
        t.join(10)
        cancel()
        self.assertEqual(got, [b"changed"])

        lock = c.lock("py-lock", ttl=5)
        self.assertTrue(lock.acquire(timeout=5))
        # Debian's python3-etcd3 0.12 cannot wait for a held lock with the
        # tenacity it ships with (a TypeError in its wait callback), so a
        # contender polls with timeout=0, a try-lock (docs/clients.md).
        other = client().lock("py-lock", ttl=5)
        self.assertFalse(other.acquire(timeout=0))
        self.assertTrue(lock.release())
        self.assertTrue(other.acquire(timeout=0))
        self.assertTrue(other.release())

    def test_wrong_credentials(self):
        with self.assertRaises(Exception) as cm:
            client(password="wrong").get("/py/k")
        self.assertIn("authentication failed", str(cm.exception).lower())

    def test_read_only_user(self):
        client().put("/py/ro", "v")
        ro = client(os.environ["GORAY_TEST_ETCD_RO_USER"], os.environ["GORAY_TEST_ETCD_RO_PASSWORD"])
        self.assertEqual(ro.get("/py/ro")[0], b"v")
        with self.assertRaises(Exception) as cm:
            ro.put("/py/ro", "w")
        self.assertIn("permission denied", str(cm.exception).lower())


if __name__ == "__main__":
    unittest.main()
