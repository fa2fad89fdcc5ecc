"""Tests of the Python client against a real cluster with examples/service
deployed. tests/clients (go test) starts one and runs:

    GORAY_TEST_ADDRESS=... GORAY_TEST_TOKEN=... /usr/bin/python3 -m unittest discover -s clients/python/tests -v

Without GORAY_TEST_ADDRESS every test is skipped.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import grpc  # noqa: E402

import goray  # noqa: E402
from goray.v1 import common_pb2  # noqa: E402

ADDRESS = os.environ.get("GORAY_TEST_ADDRESS", "")
TOKEN = os.environ.get("GORAY_TEST_TOKEN", "")
NAMESPACE = os.environ.get("GORAY_TEST_NAMESPACE", "service")


@unittest.skipUnless(ADDRESS, "GORAY_TEST_ADDRESS is not set: no cluster to test against")
class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = goray.connect(ADDRESS, token=TOKEN or None, namespace=NAMESPACE, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def test_handshake(self):
        info = self.client.info
        self.assertEqual(info.protocol_version, goray.PROTOCOL_VERSION)
        self.assertIn(NAMESPACE, list(info.namespaces))
        self.assertGreaterEqual(info.node_count, 2)

    def test_put_get_each_encoding(self):
        cases = [
            ("msgpack", {"a": [1, 2.5, "x", None, True], "b": {"c": b"\x00\x01"}}),
            ("json", {"a": [1, 2.5, "x", None, True]}),
            ("raw", b"\x00\xffraw bytes"),
            ("protobuf", common_pb2.Resources(amounts={"CPU": 2.0, "gpu": 0.5})),
        ]
        for encoding, value in cases:
            with self.subTest(encoding=encoding):
                ref = self.client.put(value, encoding=encoding)
                self.assertEqual(self.client.get(ref), value)
        # Defaults: bytes go raw, messages as protobuf, the rest msgpack.
        self.assertEqual(self.client.get(self.client.put(b"abc")), b"abc")
        self.assertEqual(self.client.get(self.client.put([1, "two"])), [1, "two"])

    def test_put_with_replicas(self):
        nodes = self.client.info.node_count
        ref = self.client.put({"kept": "twice"}, replicas=2)
        self.assertEqual(ref.replicas, min(2, nodes))
        self.assertEqual(self.client.get(ref), {"kept": "twice"})
        big = bytes([7]) * (200 << 10)
        every = self.client.put(big, replicas=5)
        self.assertEqual(every.replicas, min(5, nodes))
        self.assertEqual(self.client.get(every), big)
        self.assertEqual(self.client.put(1).replicas, 1)
        with self.assertRaises(goray.InvalidArgumentError) as cm:
            self.client.put(1, replicas=65)
        self.assertIn("65 replicas", str(cm.exception))

    def test_list_namespace(self):
        ns = self.client.list_namespace()
        self.assertEqual(ns["functions"]["square"], ["int64"])
        self.assertEqual(ns["functions"]["add"], ["int64", "int64"])
        self.assertEqual(sorted(ns["actor_types"]["counter"]), ["add", "get", "reset"])

    def test_actor_calls(self):
        counter = self.client.actor("counter")
        counter.call("reset")
        self.assertEqual(counter.call("add", 5), 5)
        refs = [counter.remote("add", 1) for _ in range(10)]  # run in call order
        self.assertEqual([self.client.get(r) for r in refs], list(range(6, 16)))
        self.assertEqual(counter.call("get"), 15)
        info = self.client.get_actor("counter")
        self.assertEqual(info.type_name, "counter")
        self.assertEqual(sorted(m.name for m in info.methods), ["add", "get", "reset"])

    def test_task_calls(self):
        c = self.client
        self.assertEqual(c.call("square", 12), 144)
        self.assertEqual(c.call("add", 2, 3), 5)
        self.assertEqual(c.call("sum", [1, 2.5, 3.5]), 7.0)
        self.assertEqual(c.call("upper", "héllo"), "HÉLLO")
        self.assertEqual(c.call("greet", {"name": "Ada", "age": 36}), "hello Ada, 36")
        # A JSON argument is decoded into the Go struct by its json tags.
        self.assertEqual(c.call("greet", goray.Encoded("json", b'{"name":"Bo","age":7}')), "hello Bo, 7")
        self.assertEqual(c.call("reverse_bytes", b"abc"), b"cba")

    def test_refs_passed_between_calls(self):
        c = self.client
        sq = c.remote("square", 3)
        self.assertEqual(c.call("add", sq, 1), 10)
        self.assertEqual(c.call("square", c.remote("square", 2)), 16)
        put = c.put(21)
        self.assertEqual(c.call("square", put), 441)
        counter = c.actor("counter")
        counter.call("reset")
        self.assertEqual(counter.call("add", c.remote("square", 4)), 16)

    def test_wait_and_release(self):
        c = self.client
        refs = [c.remote("square", i) for i in range(5)]
        ready, not_ready = c.wait(refs, timeout=60)
        self.assertEqual(len(ready), 5)
        self.assertEqual(not_ready, [])
        self.assertEqual([c.get(r) for r in refs], [i * i for i in range(5)])
        self.assertEqual(c.release(*refs), 5)
        with self.assertRaises(goray.NotFoundError):
            c.get(refs[0])

    def test_large_object_round_trip(self):
        c = self.client
        data = os.urandom(50 << 20)
        ref = c.put(data)
        self.assertEqual(c.get(ref, timeout=120), data)
        self.assertEqual(c.call("size", ref, timeout=120), len(data))
        rev = c.remote("reverse_bytes", ref)
        self.assertEqual(c.get(rev, timeout=120), data[::-1])
        c.release(ref, rev)

    def test_not_found(self):
        c = self.client
        cases = {
            "unknown function": lambda: c.remote("no_such_function", 1),
            "unknown actor": lambda: c.actor("no_such_actor").remote("add", 1),
            "unknown method": lambda: c.actor("counter").remote("no_such_method"),
            "unknown namespace": lambda: c.remote("square", 1, namespace="no-such-namespace"),
            "unknown named actor lookup": lambda: c.get_actor("no_such_actor"),
        }
        for name, fn in cases.items():
            with self.subTest(name):
                with self.assertRaises(goray.NotFoundError) as cm:
                    fn()
                self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
                self.assertTrue(cm.exception.details)

    def test_invalid_argument(self):
        c = self.client
        cases = {
            "wrong argument type": lambda: c.call("square", "not a number"),
            "integer out of range": lambda: c.call("square", 2**63),
            "None for an integer": lambda: c.call("square", None),
            "wrong struct field type": lambda: c.call("greet", {"name": 1, "age": "x"}),
            "wrong argument count": lambda: c.remote("add", 1),
            "undecodable msgpack": lambda: c.put(goray.Encoded("msgpack", b"\xc1")),
            "undecodable json": lambda: c.put(goray.Encoded("json", b"{nope")),
            "protobuf without type": lambda: c.put(goray.Encoded("protobuf", b"\x08\x01")),
            "undecodable argument": lambda: c.remote("square", goray.Encoded("msgpack", b"\x92\x01")),
        }
        for name, fn in cases.items():
            with self.subTest(name):
                with self.assertRaises(goray.InvalidArgumentError) as cm:
                    fn()
                self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)

    def test_task_error(self):
        with self.assertRaises(goray.TaskError) as cm:
            self.client.call("fail", "boom")
        self.assertIn("boom", cm.exception.details)

    def test_files(self):
        import hashlib
        import io
        c = self.client
        data = os.urandom((5 << 20) + 123)
        info = c.put_file(io.BytesIO(data), replicas=2, name="python/test.bin")
        self.assertEqual(info.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(info.size, len(data))
        self.assertEqual(info.replicas_wanted, 2)
        self.assertEqual(len(info.replica_nodes), 2)  # the cluster has two nodes
        self.assertEqual(c.get_file("python/test.bin"), data)
        self.assertEqual(c.get_file("sha256:" + info.sha256), data)
        out = io.BytesIO()
        self.assertEqual(c.get_file(info.sha256, out).sha256, info.sha256)
        self.assertEqual(out.getvalue(), data)
        self.assertEqual(c.stat_file("python/test.bin").names, ["python/test.bin"])
        self.assertIn(info.sha256, [f.sha256 for f in c.list_files("python/")])
        # More replicas than nodes: stored on all, and the answer says so.
        five = c.put_file(b"five", replicas=5)
        self.assertEqual((five.replicas_wanted, len(five.replica_nodes)), (5, 2))
        self.assertTrue(c.remove_file("python/test.bin"))
        with self.assertRaises(goray.NotFoundError):
            c.get_file(info.sha256)
        c.remove_file(five.sha256)

    def test_file_errors(self):
        c = self.client
        cases = {
            "malformed hash": (lambda: c.get_file("sha256:1234"), goray.InvalidArgumentError),
            "malformed name": (lambda: c.put_file(b"x", name="a//b"), goray.InvalidArgumentError),
            "unknown hash": (lambda: c.stat_file("ab" * 32), goray.NotFoundError),
            "unknown name": (lambda: c.get_file("no/such/file"), goray.NotFoundError),
        }
        for name, (fn, err) in cases.items():
            with self.subTest(name):
                with self.assertRaises(err):
                    fn()

    def test_unauthenticated(self):
        for name, token in {"wrong token": "0" * 64, "missing token": ""}.items():
            with self.subTest(name):
                with self.assertRaises(goray.UnauthenticatedError) as cm:
                    goray.connect(ADDRESS, token=token, namespace=NAMESPACE)
                self.assertEqual(cm.exception.code, grpc.StatusCode.UNAUTHENTICATED)


if __name__ == "__main__":
    unittest.main(verbosity=2)
