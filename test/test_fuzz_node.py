"""Fuzz the running perception node (in-process) with a table of bad frames (issue 17).

Each bad frame goes to a camera, and then a good one: the bad one must be counted exactly once
(bad, and too_large or corrupt where it is that), the good one served, and the process's
resident memory stay within RSS_BOUND_MB of where it started (a 16000x16000 PNG bomb among
them would take 768 MB if it were decoded).
"""

import re
import struct
import threading
import zlib
from pathlib import Path

import ros_required  # noqa: F401
import cv2
import numpy as np
import pytest
from node_harness import DET, SCENE, SEG, hostile, smooth_rgb, wait_for
from sensor_msgs.msg import CompressedImage
from test_image_conversion import corrupt_jpeg, png_bomb

from pvt_mtl_ros.ros.image_conversion import (
    CorruptImageError,
    FrameTooLargeError,
    ImageConversionError,
    array_to_image_msg,
    msg_to_array,
)

pytestmark = pytest.mark.slow
RSS_BOUND_MB = 300  # growth of the sampled resident set over the whole fuzz run
H, W = 24, 32


def raw(encoding="rgb8", h=H, w=W, channels=3, itemsize=1, **fields):
    msg = array_to_image_msg(smooth_rgb(h, w), "rgb8")
    msg.encoding = encoding
    msg.step = w * channels * itemsize
    msg.data = bytes(h * msg.step)
    for key, value in fields.items():
        setattr(msg, key, value)
    return msg


def compressed(data, fmt="jpeg"):
    return CompressedImage(format=fmt, data=bytes(data))


def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width, height, rest=b""):
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + rest


def flipped(data, n, seed, start=0):
    data = bytearray(data)
    for i in np.random.default_rng(seed).integers(start, len(data) - 1, n):
        data[i] ^= 0xA5
    return bytes(data)


JPEG = cv2.imencode(".jpg", smooth_rgb(240, 320))[1].tobytes()
PNG = cv2.imencode(".png", smooth_rgb(60, 80))[1].tobytes()
IDAT = PNG.index(b"IDAT")


def jpeg_sof(width, height):
    data = bytearray(cv2.imencode(".jpg", smooth_rgb(8, 8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def bmp_header(width, height):
    """A BMP file header claiming width x height (Pillow reads the size without pixels)."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


# name -> (camera, message factory, what the node must count besides "bad")
BAD = {}
for enc in ["nv21", "nv12", "hsv8", "", "RGB8", "rgb9", "8UC5", "bayer_xyz8", "yuv420", "jpeg",
            "mono32", "16SC5", "bgr", "rgba"]:  # fmt: skip
    BAD[f"encoding {enc!r}"] = ("raw", lambda e=enc: raw(e), None)
BAD.update({
    "height 0": ("raw", lambda: raw(height=0), None),
    "width 0": ("raw", lambda: raw(width=0), None),
    "no pixels": ("raw", lambda: raw(height=0, width=0, step=0, data=b""), None),
    "empty data": ("raw", lambda: raw(data=b""), None),
    "one byte": ("raw", lambda: raw(data=b"\x00"), None),
    "half the data": ("raw", lambda: raw(data=bytes(H * W * 3 // 2)), None),
    "one byte short": ("raw", lambda: raw(data=bytes(H * W * 3 - 1)), None),
    "step 0": ("raw", lambda: raw(step=0), None),
    "step below a row": ("raw", lambda: raw(step=W * 3 - 1), None),
    "step not a multiple of 2 (rgb16)": (
        "raw", lambda: raw("rgb16", itemsize=2, step=W * 6 + 1,
                           data=bytes(H * (W * 6 + 1))), None),
    "step past the data": ("raw", lambda: raw(step=W * 3 * 4), None),
    "mono16 odd data": ("raw", lambda: raw("mono16", channels=1, itemsize=2,
                                           data=bytes(H * W * 2 - 1)), None),
    "rgb16 truncated": ("raw", lambda: raw("rgb16", itemsize=2, data=bytes(H * W * 3)), None),
    "width 2^31-1 claimed": ("raw", lambda: raw(width=2**31 - 1, step=3 * (2**31 - 1)),
                             "too_large"),
    "100000x100000 claimed": ("raw", lambda: raw(height=100_000, width=100_000,
                                                 step=300_000), "too_large"),
    "1 x 1e9 claimed": ("raw", lambda: raw(height=10**9, width=1, step=3), "too_large"),
})  # fmt: skip
for enc in ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"]:
    BAD[f"{enc} odd width"] = ("raw", lambda e=enc: raw(e, w=W + 1, channels=2), None)
BAD.update({
    "empty compressed": ("comp", lambda: compressed(b""), None),
    "one byte compressed": ("comp", lambda: compressed(b"\xff"), None),
    "text": ("comp", lambda: compressed(b"hello, camera", "png"), None),
    "jpeg magic + garbage": ("comp", lambda: compressed(b"\xff\xd8" + bytes(range(200))), None),
    "png magic + garbage": ("comp", lambda: compressed(PNG[:8] + bytes(100), "png"), None),
    "png IHDR width 0": ("comp", lambda: compressed(png_header(0, 10), "png"), None),
    "png bomb 16000x16000": ("comp", lambda: compressed(png_bomb(), "png"), "too_large"),
    "png IHDR 100000x100000, no data": ("comp", lambda: compressed(
        png_header(100_000, 100_000), "png"), "too_large"),
    "jpeg SOF 60000x60000": ("comp", lambda: compressed(jpeg_sof(60000, 60000)), "too_large"),
    "bmp header 20000x20000": ("comp", lambda: compressed(bmp_header(20000, 20000), "bmp"),
                               "too_large"),
})  # fmt: skip
for seed in range(5):
    BAD[f"random bytes {seed}"] = (
        "comp",
        lambda s=seed: compressed(np.random.default_rng(s).bytes(500 + 300 * s)),
        None,
    )
for frac in (0.1, 0.5, 0.9, 0.99):
    BAD[f"jpeg truncated at {frac:.0%}"] = (
        "comp",
        lambda f=frac: compressed(JPEG[: int(len(JPEG) * f)]),
        "corrupt",
    )
for frac in (0.1, 0.5, 0.9):
    BAD[f"png truncated at {frac:.0%}"] = (
        "comp",
        lambda f=frac: compressed(PNG[: int(len(PNG) * f)], "png"),
        None,
    )
for seed in range(5):
    BAD[f"corrupt jpeg {seed}"] = (
        "comp",
        lambda s=seed: compressed(corrupt_jpeg(50, s)),
        "corrupt",
    )
for seed in range(3):
    BAD[f"corrupt png {seed}"] = (
        "comp",
        lambda s=seed: compressed(flipped(PNG, 20, s, start=IDAT + 8), "png"),
        None,
    )


def classify(msg):
    """What the node's conversion makes of a message: 'too_large', 'corrupt' or None (bad);
    AssertionError if it converts (the table must hold bad frames only)."""
    try:
        msg_to_array(msg, "rgb8")
    except FrameTooLargeError:
        return "too_large"
    except CorruptImageError:
        return "corrupt"
    except ImageConversionError:
        return None
    raise AssertionError("converted without error")


def test_the_table_holds_60_kinds_of_bad_frame_each_classified_as_expected():
    assert len(BAD) >= 60, len(BAD)
    for name, (_, make, kind) in BAD.items():
        try:
            assert classify(make()) == kind, name
        except AssertionError as err:
            raise AssertionError(f"{name}: {err}") from None


def rss_mb():
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


class RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = rss_mb(), threading.Event()

    def run(self):
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())


@pytest.fixture(scope="module")
def checkpoint(make_tiny_checkpoint):
    return make_tiny_checkpoint(SCENE, DET, SEG, (64, 64), name="fuzz")


def test_bad_frames_are_counted_exactly_and_a_good_frame_follows_each(context, checkpoint):
    node = hostile(context, checkpoint, {"raw": "raw", "comp": "compressed"}).start()
    good = {
        "raw": lambda: array_to_image_msg(smooth_rgb(H, W), "rgb8"),
        "comp": lambda: compressed(cv2.imencode(".jpg", smooth_rgb(H, W))[1].tobytes()),
    }
    try:
        for camera in good:  # warm: the first inference is not in the memory figures
            node.outputs_for(camera, node.send(camera, node.next_header(good[camera]())))
        start = rss_mb()
        sampler = RssSampler()
        sampler.start()
        expected = {c: dict(node.counts(c)) for c in good}
        for name, (camera, make, kind) in BAD.items():
            msg = node.next_header(make())
            node.send(camera, msg)
            expected[camera]["received"] += 1
            expected[camera]["bad"] += 1
            if kind:
                expected[camera][kind] += 1
            wait_for(lambda c=camera: node.counts(c)["bad"] == expected[c]["bad"], what=name)
            msg = node.send(camera, node.next_header(good[camera]()))
            node.outputs_for(camera, msg)
            expected[camera]["received"] += 1
            expected[camera]["processed"] += 1
            for c in good:
                got = node.counts(c)
                for key in ("received", "processed", "bad", "too_large", "corrupt", "failed",
                            "superseded", "discarded"):  # fmt: skip
                    assert got[key] == expected[c][key], (name, c, key, got[key])
        sampler.stop.set()
        sampler.join()
        grew = sampler.peak - start
        assert grew < RSS_BOUND_MB, f"resident memory grew {grew:.0f} MB during the fuzz"
        for c in good:
            counts = node.counts(c)
            assert counts["received"] == counts["processed"] + counts["bad"]  # all accounted
        assert node.counts("comp")["too_large"] == sum(
            1 for cam, _, kind in BAD.values() if cam == "comp" and kind == "too_large"
        )
    finally:
        node.close()
