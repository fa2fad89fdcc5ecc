"""goray client for Python: call Go functions and actors deployed on a goray
cluster, and put and get objects, over goray's public ClientService.

    import goray
    client = goray.connect("127.0.0.1:6379", namespace="service")
    ref = client.put({"a": [1, 2, 3]})
    client.get(ref)                              # {'a': [1, 2, 3]}
    client.call("square", 12)                    # 144
    client.actor("counter").call("add", 5)
    info = client.put_file("data.csv", replicas=3, name="in/data.csv")
    client.get_file("in/data.csv", "copy.csv")   # verified against info.sha256

Values travel as MessagePack by default (native Python values), bytes as raw
bytes, protobuf messages as protobuf; pass encoding="json" to send JSON.
"""

from .client import (
    ABSENT,
    PROTOCOL_VERSION,
    ActorHandle,
    Cache,
    Client,
    Encoded,
    FileInfo,
    GorayError,
    InvalidArgumentError,
    NotFoundError,
    Ref,
    ResourceExhaustedError,
    TaskError,
    UnauthenticatedError,
    connect,
)

__all__ = [
    "ABSENT",
    "PROTOCOL_VERSION",
    "ActorHandle",
    "Cache",
    "Client",
    "Encoded",
    "FileInfo",
    "GorayError",
    "InvalidArgumentError",
    "NotFoundError",
    "Ref",
    "ResourceExhaustedError",
    "TaskError",
    "UnauthenticatedError",
    "connect",
]
