import io

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ger_replay.errors import MediaError
from ger_replay.media import encode_image, load_text, sample_indices, sha256_hex, video_frames


def decode(data):
    return Image.open(io.BytesIO(data))


def write_clip(path, count, gop=10, size=(64, 48)):
    """A clip whose frame i is uniformly grey at level 2*i, with a keyframe every `gop` frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for index in range(count):
            frame = np.full((size[1], size[0], 3), 2 * index, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def frame_index(data):
    return round(np.asarray(decode(data).convert("L"), dtype=float).mean() / 2)


@given(st.integers(1, 5000), st.integers(1, 16))
def test_sample_indices_follow_the_paper_rule(n, k):
    found = sample_indices(n, k)
    assert len(found) == k
    assert found == sorted(found) and all(0 <= i < n for i in found)
    if n >= k:
        step = n // k
        assert found == list(range(0, step * k, step))
        assert found[-1] < (n // k) * k
    else:
        assert found == list(range(n)) + [n - 1] * (k - n)


def test_sample_indices_refuse_empty_videos():
    with pytest.raises(MediaError):
        sample_indices(0, 3)


def test_images_encode_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    first = encode_image(tmp_path / "a.png")
    assert first == encode_image(tmp_path / "a.png")
    assert decode(first).format == "JPEG" and decode(first).mode == "RGB"
    assert decode(encode_image(tmp_path / "a.png", grey=True)).mode == "L"
    assert decode(encode_image(tmp_path / "a.png", max_side=30)).size == (30, 20)
    assert decode(encode_image(tmp_path / "a.png", max_side=500)).size == (60, 40)
    assert sha256_hex(first) != sha256_hex(encode_image(tmp_path / "a.png", grey=True))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    image.save(tmp_path / "r.jpg", exif=exif)
    assert decode(encode_image(tmp_path / "r.jpg")).size == (20, 40)


@pytest.mark.parametrize("count, k", [(90, 3), (91, 3), (37, 2), (2, 3)])
def test_video_frames_are_the_uniformly_sampled_ones(tmp_path, count, k):
    write_clip(tmp_path / "v.mp4", count)
    frames = video_frames(tmp_path / "v.mp4", k)
    assert [frame_index(f) for f in frames] == sample_indices(count, k)
    assert frames == video_frames(tmp_path / "v.mp4", k)


def test_frame_folders_sort_naturally(tmp_path):
    for index in range(12):
        Image.new("L", (8, 8), 2 * index).save(tmp_path / f"frame_{index}.png")
    frames = video_frames(tmp_path, 3)
    assert [frame_index(f) for f in frames] == [0, 4, 8]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n garbage"), "not a readable"),
    (lambda p: None, "no such file"),
])
def test_bad_images_name_the_file(tmp_path, make, message):
    path = tmp_path / "broken.png"
    make(path)
    with pytest.raises(MediaError, match=message) as error:
        encode_image(path)
    assert "broken.png" in str(error.value)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_bytes(b"not a video at all" * 50), "not a readable video"),
    (lambda p: p.mkdir(), "no images"),
])
def test_bad_videos_name_the_file(tmp_path, make, message):
    path = tmp_path / "clip.mp4"
    make(path)
    with pytest.raises(MediaError, match=message) as error:
        video_frames(path, 3)
    assert "clip.mp4" in str(error.value)


def test_texts(tmp_path):
    (tmp_path / "t.txt").write_text("  hello there \n", encoding="utf-8")
    assert load_text(tmp_path / "t.txt") == "hello there"
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(MediaError, match="bad.txt: not readable UTF-8"):
        load_text(tmp_path / "bad.txt")
