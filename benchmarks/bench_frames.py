"""Sampling 3 frames by seeking, against decoding the whole clip, for 10 s, 30 s and 60 s clips.

Run: python benchmarks/bench_frames.py
The clips are synthetic 320x240 H.264 at 25 fps with a keyframe every 2 s, like camera files;
seeking is only as cheap as the distance to the keyframe before each wanted frame.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import av
import imageio.v3 as iio
import numpy as np

from ger_replay.media import video_frames

FPS, WIDTH, HEIGHT, GOP = 25, 320, 240, 50


def make_clip(path: Path, seconds: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.options = {"preset": "ultrafast"}
        ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
        for index in range(seconds * FPS):
            frame = np.stack([(xs + index) % 256, (ys + 2 * index) % 256,
                              np.full_like(xs, index % 256)], axis=-1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def best_of(repeats: int, action) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def full_decode(path: Path) -> int:
    return sum(1 for _ in iio.imiter(path, plugin="pyav"))


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="ger-bench-frames-"))
    rows = []
    for seconds in (10, 30, 60):
        path = folder / f"clip{seconds}.mp4"
        make_clip(path, seconds)
        sample = best_of(5, lambda: video_frames(path, 3))
        full = best_of(2, lambda: full_decode(path))
        rows.append((seconds, sample, full))
        print(f"{seconds:>3d} s clip ({seconds * FPS} frames): sample 3 frames {sample * 1000:7.1f} ms,"
              f" decode all {full * 1000:7.1f} ms, ratio {100 * sample / full:5.1f}%")
    growth = rows[-1][1] / rows[0][1]
    print(f"sampling time grows {growth:.2f}x from a 10 s to a 60 s clip "
          f"(full decode grows {rows[-1][2] / rows[0][2]:.2f}x)")
    print(f"60s clip: sampling 3 frames = {100 * rows[-1][1] / rows[-1][2]:.1f}% of a full decode")


if __name__ == "__main__":
    main()
