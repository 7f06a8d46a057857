from tributary.v1 import gateway_pb2 as _gateway_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommitRequest(_message.Message):
    __slots__ = ("name", "offsets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    offsets: _containers.RepeatedCompositeFieldContainer[_gateway_pb2.PartitionOffset]
    def __init__(self, name: _Optional[str] = ..., offsets: _Optional[_Iterable[_Union[_gateway_pb2.PartitionOffset, _Mapping]]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: SubscriptionInfo
    def __init__(self, subscription: _Optional[_Union[SubscriptionInfo, _Mapping]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions",)
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[SubscriptionInfo]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[SubscriptionInfo, _Mapping]]] = ...) -> None: ...

class DescribeSubscriptionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteSubscriptionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteSubscriptionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubscriptionInfo(_message.Message):
    __slots__ = ("name", "group", "topics", "partitions", "translator_name", "translator_digest", "translator_config_sha256", "committed_at_ms", "active_here")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSLATOR_NAME_FIELD_NUMBER: _ClassVar[int]
    TRANSLATOR_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TRANSLATOR_CONFIG_SHA256_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_HERE_FIELD_NUMBER: _ClassVar[int]
    name: str
    group: str
    topics: _containers.RepeatedScalarFieldContainer[str]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionPosition]
    translator_name: str
    translator_digest: str
    translator_config_sha256: str
    committed_at_ms: int
    active_here: bool
    def __init__(self, name: _Optional[str] = ..., group: _Optional[str] = ..., topics: _Optional[_Iterable[str]] = ..., partitions: _Optional[_Iterable[_Union[PartitionPosition, _Mapping]]] = ..., translator_name: _Optional[str] = ..., translator_digest: _Optional[str] = ..., translator_config_sha256: _Optional[str] = ..., committed_at_ms: _Optional[int] = ..., active_here: bool = ...) -> None: ...

class PartitionPosition(_message.Message):
    __slots__ = ("topic", "partition", "committed_offset", "latest_offset", "lag")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LATEST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    committed_offset: int
    latest_offset: int
    lag: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., committed_offset: _Optional[int] = ..., latest_offset: _Optional[int] = ..., lag: _Optional[int] = ...) -> None: ...
