"""Media: images, video frames and texts, encoded into the exact bytes a request carries.

The store keys requests by the SHA-256 of these bytes, so encoding is deterministic: fixed JPEG
settings, no metadata. Videos are sampled by seeking to the frames wanted, never by decoding
the whole clip.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MediaError

log = logging.getLogger(__name__)

JPEG_QUALITY = 90
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jpeg(image: Image.Image, grey: bool, max_side: int | None) -> bytes:
    image = image.convert("L" if grey else "RGB")
    if max_side and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False)
    return buffer.getvalue()


def encode_image(path: str | Path, *, grey: bool = False, max_side: int | None = None) -> bytes:
    """An image file as deterministic JPEG bytes (RGB, or greyscale), EXIF orientation applied."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _jpeg(ImageOps.exif_transpose(image), grey, max_side)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable image ({exc}); replace or skip the sample") \
            from None


def encode_frame(frame: np.ndarray | Image.Image, *, grey: bool = False,
                 max_side: int | None = None) -> bytes:
    """A decoded video frame as JPEG bytes, encoded exactly like an image file."""
    image = frame if isinstance(frame, Image.Image) else Image.fromarray(frame)
    return _jpeg(image, grey, max_side)


def sample_indices(n: int, k: int) -> list[int]:
    """The paper's uniform rule: keep the first floor(n/k)*k frames, take every floor(n/k)-th;
    with fewer than k frames, take them all and repeat the last."""
    if n <= 0:
        raise MediaError("a video with no frames cannot be sampled")
    if k <= 0:
        raise MediaError("at least one frame must be sampled")
    if n < k:
        return list(range(n)) + [n - 1] * (k - n)
    step = n // k
    return [i * step for i in range(k)]


def video_frames(path: str | Path, k: int, *, grey: bool = False,
                 max_side: int | None = None) -> list[bytes]:
    """k uniformly sampled frames of a video file, or of a folder of pre-extracted frames."""
    path = Path(path)
    if path.is_dir():
        return _folder_frames(path, k, grey, max_side)
    _check_file(path)
    try:
        with iio.imopen(path, "r", plugin="pyav") as video:
            wanted = sample_indices(_frame_count(video), k)
            # imageio's pyav plugin seeks to the keyframe before an index and decodes forward.
            decoded = {index: video.read(index=index) for index in sorted(set(wanted))}
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, StopIteration, IndexError) as exc:
        raise MediaError(f"{path}: not a readable video ({exc or type(exc).__name__}); "
                         "replace or skip the sample") from None
    return [encode_frame(decoded[i], grey=grey, max_side=max_side) for i in wanted]


def _frame_count(video) -> int:
    """Frames in the stream from its header; a decoding count only when the header is silent."""
    count = video.properties().n_images
    if count:
        return count
    metadata = video.metadata()
    if metadata.get("duration") and metadata.get("fps"):
        return int(round(metadata["duration"] * metadata["fps"]))
    log.debug("no frame count in the header; counting by decoding")
    return sum(1 for _ in video.iter())


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", path.name)]


def _folder_frames(folder: Path, k: int, grey: bool, max_side: int | None) -> list[bytes]:
    frames = sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES),
                    key=_natural)
    if not frames:
        raise MediaError(f"{folder}: a frame folder with no images ({', '.join(FRAME_SUFFIXES)})")
    return [encode_image(frames[i], grey=grey, max_side=max_side)
            for i in sample_indices(len(frames), k)]


def load_text(path: str | Path) -> str:
    """A sample's text from a UTF-8 file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise MediaError(f"{path}: no such text file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: not readable UTF-8 text ({exc})") from None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes); replace or skip the sample")
