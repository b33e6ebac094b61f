from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ColorConversion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COLOR_CONVERSION_UNSPECIFIED: _ClassVar[ColorConversion]
    COLOR_CONVERSION_REFERENCE: _ClassVar[ColorConversion]
    COLOR_CONVERSION_ACCURATE: _ClassVar[ColorConversion]

class OutputMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_MODE_UNSPECIFIED: _ClassVar[OutputMode]
    OUTPUT_MODE_CUDA_IPC: _ClassVar[OutputMode]
    OUTPUT_MODE_SHM: _ClassVar[OutputMode]
    OUTPUT_MODE_INLINE: _ClassVar[OutputMode]

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_F32: _ClassVar[Dtype]
    DTYPE_BF16: _ClassVar[Dtype]
    DTYPE_F16: _ClassVar[Dtype]
COLOR_CONVERSION_UNSPECIFIED: ColorConversion
COLOR_CONVERSION_REFERENCE: ColorConversion
COLOR_CONVERSION_ACCURATE: ColorConversion
OUTPUT_MODE_UNSPECIFIED: OutputMode
OUTPUT_MODE_CUDA_IPC: OutputMode
OUTPUT_MODE_SHM: OutputMode
OUTPUT_MODE_INLINE: OutputMode
DTYPE_UNSPECIFIED: Dtype
DTYPE_F32: Dtype
DTYPE_BF16: Dtype
DTYPE_F16: Dtype

class Source(_message.Message):
    __slots__ = ("path", "data", "filename_hint")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_HINT_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    filename_hint: str
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ..., filename_hint: _Optional[str] = ...) -> None: ...

class Sampling(_message.Message):
    __slots__ = ("fps", "min_frames", "max_frames", "nframes", "frames", "timestamps", "start", "end", "min_pixels", "max_pixels", "total_pixels", "resized_height", "resized_width", "color")
    FPS_FIELD_NUMBER: _ClassVar[int]
    MIN_FRAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
    NFRAMES_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    MIN_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PIXELS_FIELD_NUMBER: _ClassVar[int]
    RESIZED_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RESIZED_WIDTH_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    fps: float
    min_frames: int
    max_frames: int
    nframes: int
    frames: _containers.RepeatedScalarFieldContainer[int]
    timestamps: _containers.RepeatedScalarFieldContainer[float]
    start: float
    end: float
    min_pixels: float
    max_pixels: float
    total_pixels: float
    resized_height: int
    resized_width: int
    color: ColorConversion
    def __init__(self, fps: _Optional[float] = ..., min_frames: _Optional[int] = ..., max_frames: _Optional[int] = ..., nframes: _Optional[int] = ..., frames: _Optional[_Iterable[int]] = ..., timestamps: _Optional[_Iterable[float]] = ..., start: _Optional[float] = ..., end: _Optional[float] = ..., min_pixels: _Optional[float] = ..., max_pixels: _Optional[float] = ..., total_pixels: _Optional[float] = ..., resized_height: _Optional[int] = ..., resized_width: _Optional[int] = ..., color: _Optional[_Union[ColorConversion, str]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("source", "sampling", "model", "output", "dtype")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    source: Source
    sampling: Sampling
    model: str
    output: OutputMode
    dtype: Dtype
    def __init__(self, source: _Optional[_Union[Source, _Mapping]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., model: _Optional[str] = ..., output: _Optional[_Union[OutputMode, str]] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class FramesRequest(_message.Message):
    __slots__ = ("source", "sampling", "model", "output", "dtype")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    source: Source
    sampling: Sampling
    model: str
    output: OutputMode
    dtype: Dtype
    def __init__(self, source: _Optional[_Union[Source, _Mapping]] = ..., sampling: _Optional[_Union[Sampling, _Mapping]] = ..., model: _Optional[str] = ..., output: _Optional[_Union[OutputMode, str]] = ..., dtype: _Optional[_Union[Dtype, str]] = ...) -> None: ...

class TensorDescriptor(_message.Message):
    __slots__ = ("mode", "shape", "dtype", "nbytes", "cuda_ipc_handle", "device", "offset", "pool_id", "shm_name", "lease_id", "lease_expires_in_s")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    CUDA_IPC_HANDLE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    POOL_ID_FIELD_NUMBER: _ClassVar[int]
    SHM_NAME_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    mode: OutputMode
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: Dtype
    nbytes: int
    cuda_ipc_handle: bytes
    device: int
    offset: int
    pool_id: str
    shm_name: str
    lease_id: str
    lease_expires_in_s: float
    def __init__(self, mode: _Optional[_Union[OutputMode, str]] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., nbytes: _Optional[int] = ..., cuda_ipc_handle: _Optional[bytes] = ..., device: _Optional[int] = ..., offset: _Optional[int] = ..., pool_id: _Optional[str] = ..., shm_name: _Optional[str] = ..., lease_id: _Optional[str] = ..., lease_expires_in_s: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("demux_s", "decode_preprocess_s", "encode_s", "publish_s", "queue_s", "total_s")
    DEMUX_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_PREPROCESS_S_FIELD_NUMBER: _ClassVar[int]
    ENCODE_S_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_S_FIELD_NUMBER: _ClassVar[int]
    QUEUE_S_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    demux_s: float
    decode_preprocess_s: float
    encode_s: float
    publish_s: float
    queue_s: float
    total_s: float
    def __init__(self, demux_s: _Optional[float] = ..., decode_preprocess_s: _Optional[float] = ..., encode_s: _Optional[float] = ..., publish_s: _Optional[float] = ..., queue_s: _Optional[float] = ..., total_s: _Optional[float] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("tensor", "video_grid_thw", "second_per_grid_ts", "frame_indices", "timestamps", "timings", "decoded_on", "inline_chunk", "last", "grid_timestamps")
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    VIDEO_GRID_THW_FIELD_NUMBER: _ClassVar[int]
    SECOND_PER_GRID_TS_FIELD_NUMBER: _ClassVar[int]
    FRAME_INDICES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    DECODED_ON_FIELD_NUMBER: _ClassVar[int]
    INLINE_CHUNK_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    GRID_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    tensor: TensorDescriptor
    video_grid_thw: _containers.RepeatedScalarFieldContainer[int]
    second_per_grid_ts: _containers.RepeatedScalarFieldContainer[float]
    frame_indices: _containers.RepeatedScalarFieldContainer[int]
    timestamps: _containers.RepeatedScalarFieldContainer[float]
    timings: Timings
    decoded_on: str
    inline_chunk: bytes
    last: bool
    grid_timestamps: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, tensor: _Optional[_Union[TensorDescriptor, _Mapping]] = ..., video_grid_thw: _Optional[_Iterable[int]] = ..., second_per_grid_ts: _Optional[_Iterable[float]] = ..., frame_indices: _Optional[_Iterable[int]] = ..., timestamps: _Optional[_Iterable[float]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., decoded_on: _Optional[str] = ..., inline_chunk: _Optional[bytes] = ..., last: bool = ..., grid_timestamps: _Optional[_Iterable[float]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: bool
    def __init__(self, released: bool = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Gpu(_message.Message):
    __slots__ = ("ordinal", "name", "memory_bytes", "nvdec_engines")
    ORDINAL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NVDEC_ENGINES_FIELD_NUMBER: _ClassVar[int]
    ordinal: int
    name: str
    memory_bytes: int
    nvdec_engines: int
    def __init__(self, ordinal: _Optional[int] = ..., name: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., nvdec_engines: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "architecture", "dtype", "out_hidden_size", "device", "outputs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    OUT_HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    architecture: str
    dtype: str
    out_hidden_size: int
    device: str
    outputs: _containers.RepeatedCompositeFieldContainer[OutputPart]
    def __init__(self, name: _Optional[str] = ..., architecture: _Optional[str] = ..., dtype: _Optional[str] = ..., out_hidden_size: _Optional[int] = ..., device: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[OutputPart, _Mapping]]] = ...) -> None: ...

class OutputPart(_message.Message):
    __slots__ = ("name", "width")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    width: int
    def __init__(self, name: _Optional[str] = ..., width: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("version", "gpus", "codecs", "models", "max_inline_bytes", "max_queue", "media_roots")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_INLINE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_ROOTS_FIELD_NUMBER: _ClassVar[int]
    version: str
    gpus: _containers.RepeatedCompositeFieldContainer[Gpu]
    codecs: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    max_inline_bytes: int
    max_queue: int
    media_roots: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[Gpu, _Mapping]]] = ..., codecs: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ..., max_inline_bytes: _Optional[int] = ..., max_queue: _Optional[int] = ..., media_roots: _Optional[_Iterable[str]] = ...) -> None: ...
