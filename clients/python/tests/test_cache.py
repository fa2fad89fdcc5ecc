"""Tests of the Python client's cache against a real cluster (tests/clients
runs them with the other client tests; without GORAY_TEST_ADDRESS every test
is skipped)."""

import os
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import grpc  # noqa: E402

import goray  # noqa: E402

ADDRESS = os.environ.get("GORAY_TEST_ADDRESS", "")
TOKEN = os.environ.get("GORAY_TEST_TOKEN", "")
NAMESPACE = os.environ.get("GORAY_TEST_NAMESPACE", "service")


@unittest.skipUnless(ADDRESS, "GORAY_TEST_ADDRESS is not set: no cluster to test against")
class CacheTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = goray.connect(ADDRESS, token=TOKEN or None, namespace=NAMESPACE, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def new_cache(self, **kw):
        return self.client.create_cache("py-" + uuid.uuid4().hex[:12], **kw)

    def test_set_get_delete_stats(self):
        c = self.new_cache(shards=2)
        self.assertIsNone(c.get("missing"))
        self.assertEqual(c.get("missing", "dflt"), "dflt")
        values = {"a": {"x": [1, 2.5, None]}, "b": b"\x00raw", "c": "text", "d": 42}
        for k, v in values.items():
            c.set(k, v)
        for k, v in values.items():
            self.assertEqual(c.get(k), v)
        self.assertTrue(c.delete("a"))
        self.assertFalse(c.delete("a"))
        self.assertFalse(c.contains("a"))
        st = c.stats()
        self.assertEqual(len(st["shards"]), 2)
        self.assertEqual(st["total"]["entries"], 3)
        self.assertEqual(st["total"]["hits"], 4)
        self.assertEqual(st["total"]["misses"], 3)
        # The same cache by name, from another handle.
        self.assertEqual(self.client.cache(c.name).get("c"), "text")

    def test_lru_and_ttl(self):
        c = self.new_cache(shards=1, max_entries=2)
        c.set("a", 1)
        c.set("b", 2)
        c.get("a")
        c.set("c", 3)
        self.assertEqual([c.get(k) for k in "abc"], [1, None, 3])
        self.assertEqual(c.stats()["total"]["evictions"], 1)
        t = self.new_cache(shards=1)
        t.set("short", 1, ttl=0.2)
        t.set("long", 2)
        deadline = time.monotonic() + 30
        while t.contains("short"):  # polls until the entry expired
            self.assertLess(time.monotonic(), deadline, "the 0.2 s entry never expired")
            time.sleep(0.05)
        self.assertEqual(t.get("long"), 2)

    def test_atomic_ops(self):
        c = self.new_cache(shards=2)
        self.assertEqual(c.incr("n"), 1)
        self.assertEqual(c.incr("n", 41), 42)
        self.assertEqual(c.get("n"), 42)
        self.assertTrue(c.compare_and_swap("k", goray.ABSENT, "v1"))
        self.assertFalse(c.compare_and_swap("k", goray.ABSENT, "v2"))
        self.assertFalse(c.compare_and_swap("k", "wrong", "v2"))
        self.assertTrue(c.compare_and_swap("k", "v1", "v2"))
        self.assertEqual(c.get("k"), "v2")
        with self.assertRaises(goray.InvalidArgumentError):
            c.incr("k")

    def test_get_or_compute_once(self):
        c = self.new_cache(shards=2)
        calls = []
        lock = threading.Lock()
        results = []

        def compute():
            with lock:
                calls.append(1)
            time.sleep(0.3)  # the computation's work: the others ask meanwhile
            return {"computed": True}

        def caller():
            results.append(c.get_or_compute("k", compute))

        threads = [threading.Thread(target=caller) for _ in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual(len(calls), 1)
        self.assertEqual(results, [{"computed": True}] * 20)
        # A failing computation raises and gives the lease up.
        with self.assertRaises(ZeroDivisionError):
            c.get_or_compute("bad", lambda: 1 / 0)
        self.assertEqual(c.get_or_compute("bad", lambda: "ok"), "ok")

    def test_errors(self):
        with self.assertRaises(goray.NotFoundError):
            self.client.cache("no-such-cache").get("k")
        with self.assertRaises(goray.InvalidArgumentError):
            self.client.create_cache("bad/name")
        c = self.new_cache(shards=1, max_entries=5)
        with self.assertRaises(goray.GorayError) as cm:
            self.client.create_cache(c.name, shards=1, max_entries=6)
        self.assertEqual(cm.exception.code, grpc.StatusCode.ALREADY_EXISTS)
        with self.assertRaises(goray.InvalidArgumentError):
            c.set("k", goray.Encoded("msgpack", b"\xc1"))
        with self.assertRaises(goray.InvalidArgumentError):
            c.get("x" * 5000)


if __name__ == "__main__":
    unittest.main(verbosity=2)
