from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UploadTranslatorRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("name", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class TranslatorVersion(_message.Message):
    __slots__ = ("name", "digest", "size", "uploaded_at_ms", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    size: int
    uploaded_at_ms: int
    version: int
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., uploaded_at_ms: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class TranslatorInfo(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[TranslatorVersion]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[TranslatorVersion, _Mapping]]] = ...) -> None: ...

class ListTranslatorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTranslatorsResponse(_message.Message):
    __slots__ = ("translators",)
    TRANSLATORS_FIELD_NUMBER: _ClassVar[int]
    translators: _containers.RepeatedCompositeFieldContainer[TranslatorInfo]
    def __init__(self, translators: _Optional[_Iterable[_Union[TranslatorInfo, _Mapping]]] = ...) -> None: ...

class DescribeTranslatorRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTranslatorRequest(_message.Message):
    __slots__ = ("name", "digest")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    name: str
    digest: str
    def __init__(self, name: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class DeleteTranslatorResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedCompositeFieldContainer[TranslatorVersion]
    def __init__(self, deleted: _Optional[_Iterable[_Union[TranslatorVersion, _Mapping]]] = ...) -> None: ...
