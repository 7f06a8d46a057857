from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartitionOffset(_message.Message):
    __slots__ = ("topic", "partition", "offset")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class KeyFilter(_message.Message):
    __slots__ = ("exact", "prefixes")
    EXACT_FIELD_NUMBER: _ClassVar[int]
    PREFIXES_FIELD_NUMBER: _ClassVar[int]
    exact: _containers.RepeatedScalarFieldContainer[bytes]
    prefixes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, exact: _Optional[_Iterable[bytes]] = ..., prefixes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RecordFilter(_message.Message):
    __slots__ = ("headers", "fields", "tombstone_mismatches")
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    TOMBSTONE_MISMATCHES_FIELD_NUMBER: _ClassVar[int]
    headers: _containers.RepeatedCompositeFieldContainer[HeaderCondition]
    fields: _containers.RepeatedCompositeFieldContainer[FieldCondition]
    tombstone_mismatches: bool
    def __init__(self, headers: _Optional[_Iterable[_Union[HeaderCondition, _Mapping]]] = ..., fields: _Optional[_Iterable[_Union[FieldCondition, _Mapping]]] = ..., tombstone_mismatches: bool = ...) -> None: ...

class HeaderCondition(_message.Message):
    __slots__ = ("key", "any_of")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    key: str
    any_of: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, key: _Optional[str] = ..., any_of: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FieldCondition(_message.Message):
    __slots__ = ("pointer", "any_of")
    POINTER_FIELD_NUMBER: _ClassVar[int]
    ANY_OF_FIELD_NUMBER: _ClassVar[int]
    pointer: str
    any_of: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pointer: _Optional[str] = ..., any_of: _Optional[_Iterable[str]] = ...) -> None: ...

class TranslatorRef(_message.Message):
    __slots__ = ("name", "digest", "config", "skip_errors")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SKIP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    config: str
    skip_errors: bool
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., config: _Optional[str] = ..., skip_errors: bool = ...) -> None: ...

class DescribeTopicsRequest(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topics: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeTopicsResponse(_message.Message):
    __slots__ = ("topics", "ready", "kafka_reachable", "watermarks_age_ms")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    KAFKA_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    WATERMARKS_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedCompositeFieldContainer[TopicDescription]
    ready: bool
    kafka_reachable: bool
    watermarks_age_ms: int
    def __init__(self, topics: _Optional[_Iterable[_Union[TopicDescription, _Mapping]]] = ..., ready: bool = ..., kafka_reachable: bool = ..., watermarks_age_ms: _Optional[int] = ...) -> None: ...

class TopicDescription(_message.Message):
    __slots__ = ("name", "partitions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionDescription]
    def __init__(self, name: _Optional[str] = ..., partitions: _Optional[_Iterable[_Union[PartitionDescription, _Mapping]]] = ...) -> None: ...

class PartitionDescription(_message.Message):
    __slots__ = ("partition", "earliest_offset", "latest_offset", "view_offset", "keys")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    EARLIEST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    LATEST_OFFSET_FIELD_NUMBER: _ClassVar[int]
    VIEW_OFFSET_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    earliest_offset: int
    latest_offset: int
    view_offset: int
    keys: int
    def __init__(self, partition: _Optional[int] = ..., earliest_offset: _Optional[int] = ..., latest_offset: _Optional[int] = ..., view_offset: _Optional[int] = ..., keys: _Optional[int] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ("topics",)
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, topics: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTopologyResponse(_message.Message):
    __slots__ = ("partitions", "sharded", "address", "group_state")
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    SHARDED_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GROUP_STATE_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionOwner]
    sharded: bool
    address: str
    group_state: str
    def __init__(self, partitions: _Optional[_Iterable[_Union[PartitionOwner, _Mapping]]] = ..., sharded: bool = ..., address: _Optional[str] = ..., group_state: _Optional[str] = ...) -> None: ...

class PartitionOwner(_message.Message):
    __slots__ = ("topic", "partition", "owner", "moving")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    MOVING_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    owner: str
    moving: bool
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., owner: _Optional[str] = ..., moving: bool = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("topics", "key_filter", "max_chunk_bytes", "translator", "record_filter", "as_of_offsets")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    KEY_FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRANSLATOR_FIELD_NUMBER: _ClassVar[int]
    RECORD_FILTER_FIELD_NUMBER: _ClassVar[int]
    AS_OF_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    key_filter: KeyFilter
    max_chunk_bytes: int
    translator: TranslatorRef
    record_filter: RecordFilter
    as_of_offsets: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    def __init__(self, topics: _Optional[_Iterable[str]] = ..., key_filter: _Optional[_Union[KeyFilter, _Mapping]] = ..., max_chunk_bytes: _Optional[int] = ..., translator: _Optional[_Union[TranslatorRef, _Mapping]] = ..., record_filter: _Optional[_Union[RecordFilter, _Mapping]] = ..., as_of_offsets: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ...) -> None: ...

class SnapshotEntry(_message.Message):
    __slots__ = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers", "output_index")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_INDEX_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes
    value: bytes
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    output_index: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., output_index: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("offsets", "entries", "last", "skipped_records")
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    offsets: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    entries: _containers.RepeatedCompositeFieldContainer[SnapshotEntry]
    last: bool
    skipped_records: int
    def __init__(self, offsets: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ..., entries: _Optional[_Iterable[_Union[SnapshotEntry, _Mapping]]] = ..., last: bool = ..., skipped_records: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("topics", "from_offsets", "key_filter", "max_batch_records", "translator", "subscription_name", "accept_translator_change", "auto_commit", "record_filter", "conflate")
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    FROM_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    KEY_FILTER_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRANSLATOR_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_NAME_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_TRANSLATOR_CHANGE_FIELD_NUMBER: _ClassVar[int]
    AUTO_COMMIT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FILTER_FIELD_NUMBER: _ClassVar[int]
    CONFLATE_FIELD_NUMBER: _ClassVar[int]
    topics: _containers.RepeatedScalarFieldContainer[str]
    from_offsets: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    key_filter: KeyFilter
    max_batch_records: int
    translator: TranslatorRef
    subscription_name: str
    accept_translator_change: bool
    auto_commit: bool
    record_filter: RecordFilter
    conflate: bool
    def __init__(self, topics: _Optional[_Iterable[str]] = ..., from_offsets: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ..., key_filter: _Optional[_Union[KeyFilter, _Mapping]] = ..., max_batch_records: _Optional[int] = ..., translator: _Optional[_Union[TranslatorRef, _Mapping]] = ..., subscription_name: _Optional[str] = ..., accept_translator_change: bool = ..., auto_commit: bool = ..., record_filter: _Optional[_Union[RecordFilter, _Mapping]] = ..., conflate: bool = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("topic", "partition", "offset", "timestamp_ms", "key", "value", "headers", "output_index")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_INDEX_FIELD_NUMBER: _ClassVar[int]
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes
    value: bytes
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    output_index: int
    def __init__(self, topic: _Optional[str] = ..., partition: _Optional[int] = ..., offset: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., output_index: _Optional[int] = ...) -> None: ...

class RecordBatch(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("offsets", "skipped_records")
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    offsets: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    skipped_records: int
    def __init__(self, offsets: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ..., skipped_records: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("records", "progress")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    records: RecordBatch
    progress: Progress
    def __init__(self, records: _Optional[_Union[RecordBatch, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class OffsetsDetail(_message.Message):
    __slots__ = ("kind", "offsets")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[OffsetsDetail.Kind]
        EARLIEST: _ClassVar[OffsetsDetail.Kind]
        RESUME: _ClassVar[OffsetsDetail.Kind]
        LATEST: _ClassVar[OffsetsDetail.Kind]
    KIND_UNSPECIFIED: OffsetsDetail.Kind
    EARLIEST: OffsetsDetail.Kind
    RESUME: OffsetsDetail.Kind
    LATEST: OffsetsDetail.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    OFFSETS_FIELD_NUMBER: _ClassVar[int]
    kind: OffsetsDetail.Kind
    offsets: _containers.RepeatedCompositeFieldContainer[PartitionOffset]
    def __init__(self, kind: _Optional[_Union[OffsetsDetail.Kind, str]] = ..., offsets: _Optional[_Iterable[_Union[PartitionOffset, _Mapping]]] = ...) -> None: ...
