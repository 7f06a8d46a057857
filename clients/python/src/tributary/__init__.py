"""Python client of Tributary: follow system A's state through Kafka, via the gateway.

    from tributary import Client, Follower, FileStore

    with Client("127.0.0.1:50051") as client:
        Follower(client, topics=["media-assignments"], handler=MyHandler(),
                 store=FileStore("position.json")).run()
"""

from tributary.client import Client
from tributary.errors import TributaryError, from_rpc_error
from tributary.fleet import FleetFollower
from tributary.follow import Follower, Handler
from tributary.store import FileStore, MemoryStore, Store
from tributary.types import (
    Change,
    FieldCondition,
    Header,
    HeaderCondition,
    KeyFilter,
    Position,
    RecordFilter,
    Translator,
)

__all__ = [
    "Client",
    "Follower",
    "FleetFollower",
    "Handler",
    "Store",
    "MemoryStore",
    "FileStore",
    "Change",
    "Header",
    "Position",
    "Translator",
    "KeyFilter",
    "RecordFilter",
    "HeaderCondition",
    "FieldCondition",
    "TributaryError",
    "from_rpc_error",
]

__version__ = "0.1.0"
