"""reel-client: videos in, Qwen2.5-VL vision embeddings out, from a ``reel serve`` process.

>>> from reel_client import Client
>>> with Client("127.0.0.1:50051") as client, client.embed("clip.mp4") as result:
...     result.tensor.shape          # (tokens, hidden), zero-copy
"""

from ._errors import ReelError
from .client import Client
from .dataset import TranscodeDataset, TranscodeFileNotFoundError, TranscodeFormatError, collate_qwen
from .result import Result

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Result",
    "ReelError",
    "TranscodeDataset",
    "TranscodeFileNotFoundError",
    "TranscodeFormatError",
    "collate_qwen",
    "__version__",
]
