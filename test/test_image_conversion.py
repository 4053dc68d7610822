"""pvt_mtl_ros.ros.image_conversion: round trips with pixel checks, and every bad input."""

import importlib.util
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from pvt_mtl_ros.ros.image_conversion import (
    ImageConversionError,
    array_to_compressed_msg,
    array_to_image_msg,
    compressed_msg_to_array,
    image_msg_to_array,
    msg_to_array,
)

needs_sensor_msgs = pytest.mark.skipif(
    importlib.util.find_spec("sensor_msgs") is None,
    reason="sensor_msgs (ROS 2) is not importable: array -> message needs it",
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)


def raw_msg(pixels, encoding, step=None, bigendian=False, **overrides):
    """A duck-typed sensor_msgs/Image (no ROS needed)."""
    data = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<")).tobytes()
    row = pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1) * pixels.itemsize
    step = row if step is None else step
    rows = [data[i * row : (i + 1) * row].ljust(step, b"\xee") for i in range(pixels.shape[0])]
    fields = dict(
        height=pixels.shape[0],
        width=pixels.shape[1],
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=b"".join(rows),
    )
    fields.update(overrides)
    return SimpleNamespace(**fields)


def changed(msg, **fields):
    return SimpleNamespace(**{**vars(msg), **fields})


GOOD = raw_msg(RGB, "rgb8")


def compressed(data, fmt="jpeg"):
    return SimpleNamespace(format=fmt, data=data)


def smooth_rgb(height=48, width=64):
    """A smooth image: JPEG keeps it within a few grey levels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack(
        [x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)]
    ).astype(np.uint8)


# --- round trips through real sensor_msgs messages ------------------------------------------


@needs_sensor_msgs
@pytest.mark.parametrize(
    "encoding, pixels, expected_rgb",
    [
        ("rgb8", RGB, RGB),
        ("bgr8", RGB[..., ::-1], RGB),
        ("bgra8", np.dstack([RGB[..., ::-1], np.full(RGB.shape[:2], 200, np.uint8)]), RGB),
        ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)]), RGB),
        ("mono8", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=2)),
    ],
)
def test_round_trip_8bit(encoding, pixels, expected_rgb):
    pixels = np.ascontiguousarray(pixels)
    msg = array_to_image_msg(pixels, encoding)
    assert (msg.height, msg.width, msg.encoding) == (6, 10, encoding)
    assert msg.step == pixels[0].size and len(msg.data) == pixels.size

    np.testing.assert_array_equal(image_msg_to_array(msg, "passthrough"), pixels)
    rgb = image_msg_to_array(msg)  # default: uint8 HxWx3 RGB
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 10, 3)
    np.testing.assert_array_equal(rgb, expected_rgb)
    np.testing.assert_array_equal(image_msg_to_array(msg, "bgr8"), expected_rgb[..., ::-1])


@needs_sensor_msgs
def test_round_trip_mono16_labels():
    labels = RNG.integers(0, 65535, (5, 9), dtype=np.uint16)
    labels[0, :3] = [0, 255, 65535]
    msg = array_to_image_msg(labels, "mono16")
    assert msg.step == 18 and msg.is_bigendian == 0
    out = image_msg_to_array(msg, "passthrough")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, labels)
    np.testing.assert_array_equal(image_msg_to_array(msg, "mono16"), labels)
    # 16UC1 is the generic spelling of the same layout.
    generic = array_to_image_msg(labels, "16UC1")
    np.testing.assert_array_equal(msg_to_array(generic, "passthrough"), labels)


@needs_sensor_msgs
def test_header_is_kept():
    from std_msgs.msg import Header

    header = Header(frame_id="camera")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = array_to_image_msg(RGB, "rgb8", header=header)
    assert msg.header.frame_id == "camera" and msg.header.stamp.nanosec == 345
    cmsg = array_to_compressed_msg(RGB, "png", header=header)
    assert cmsg.header.frame_id == "camera" and cmsg.header.stamp.sec == 12


@needs_sensor_msgs
def test_png_round_trip_is_exact():
    msg = array_to_compressed_msg(RGB, "png")
    assert msg.format == "png"
    np.testing.assert_array_equal(compressed_msg_to_array(msg), RGB)
    np.testing.assert_array_equal(msg_to_array(msg, "bgr8"), RGB[..., ::-1])
    gray = compressed_msg_to_array(
        array_to_compressed_msg(RGB[..., 1].copy(), "png", encoding="mono8"), "mono8"
    )
    np.testing.assert_array_equal(gray, RGB[..., 1])


@needs_sensor_msgs
def test_png_keeps_16bit_labels():
    labels = RNG.integers(0, 65535, (7, 5), dtype=np.uint16)
    msg = array_to_compressed_msg(labels, "png", encoding="mono16")
    out = compressed_msg_to_array(msg, "passthrough")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, labels)


@needs_sensor_msgs
def test_jpeg_round_trip_within_tolerance():
    image = smooth_rgb()
    msg = array_to_compressed_msg(image, "jpeg", quality=95)
    assert msg.format == "jpeg" and 0 < len(msg.data) < image.nbytes
    out = msg_to_array(msg)
    assert out.shape == image.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - image)
    assert err.mean() < 2.0 and err.max() <= 16
    # Channel order survives: red grows along x, green along y.
    assert out[24, 60, 0] > 200 and out[24, 2, 0] < 30 and out[45, 32, 1] > 200
    # bgr8 output is the same picture, channels reversed.
    np.testing.assert_array_equal(compressed_msg_to_array(msg, "bgr8"), out[..., ::-1])


# --- conversions of message layouts (duck-typed messages, no ROS needed) ---------------------


def test_padded_step_is_honoured():
    msg = raw_msg(RGB, "rgb8", step=RGB.shape[1] * 3 + 6)
    np.testing.assert_array_equal(image_msg_to_array(msg), RGB)


def test_big_endian_mono16():
    labels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    np.testing.assert_array_equal(
        image_msg_to_array(raw_msg(labels, "mono16", bigendian=True), "passthrough"), labels
    )


def test_result_does_not_alias_message():
    data = bytearray(RGB.tobytes())
    msg = raw_msg(RGB, "rgb8", data=data)
    out = image_msg_to_array(msg)
    out[:] = 0
    assert bytes(data) == RGB.tobytes()


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_yuv422_grey(encoding):
    # Y = 100 everywhere, U = V = 128 (no colour): UYVY and YUYV orderings.
    pair = [128, 100] if encoding == "yuv422" else [100, 128]
    pixels = np.tile(np.array(pair, np.uint8), (4, 8, 1))
    rgb = image_msg_to_array(raw_msg(pixels, encoding))
    assert rgb.shape == (4, 8, 3)
    assert np.abs(rgb.astype(int) - 100).max() <= 2


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8"])
def test_bayer_uniform(encoding):
    rgb = image_msg_to_array(raw_msg(np.full((6, 8), 77, np.uint8), encoding))
    assert rgb.shape == (6, 8, 3)
    np.testing.assert_array_equal(rgb, 77)


def test_mono16_to_rgb8_scales():
    rgb = image_msg_to_array(raw_msg(np.full((2, 3), 65535, np.uint16), "mono16"))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, 255)


# --- bad input: always ImageConversionError (a ValueError) -----------------------------------


@pytest.mark.parametrize(
    "msg, match",
    [
        (changed(GOOD, encoding="jpeg8"), "unsupported image encoding"),
        (changed(GOOD, encoding="nv12"), "unsupported image encoding"),
        (changed(GOOD, data=b""), "empty"),
        (changed(GOOD, height=0), "no pixels"),
        (changed(GOOD, width=0), "no pixels"),
        (changed(GOOD, step=10), "wrong step"),
        (changed(GOOD, step=0), "wrong step"),
        (raw_msg(np.zeros((2, 3), np.uint16), "mono16", step=7), "wrong step"),
        (changed(GOOD, height=7), "fewer than step\\*height"),
        (changed(GOOD, step=40), "fewer than step\\*height"),
        (changed(GOOD, data=RGB.tobytes()[:-1]), "fewer than step\\*height"),
        (changed(GOOD, data=object()), "not a byte sequence"),
    ],
)
def test_bad_image_message(msg, match):
    with pytest.raises(ImageConversionError, match=match):
        image_msg_to_array(msg)
    with pytest.raises(ImageConversionError, match=match):
        msg_to_array(msg, "passthrough")


def test_unsupported_target_encodings():
    msg = raw_msg(RGB, "rgb8")
    with pytest.raises(ImageConversionError, match="unsupported image encoding"):
        image_msg_to_array(msg, "hsv8")
    with pytest.raises(ImageConversionError, match="cannot convert"):
        image_msg_to_array(raw_msg(np.zeros((2, 2), np.uint16), "16UC1"), "rgb8")
    with pytest.raises(ImageConversionError, match="yuv422 image has an odd width 3"):
        image_msg_to_array(raw_msg(np.zeros((2, 3, 2), np.uint8), "yuv422"), "rgb8")


def test_bad_compressed_frames():
    _, jpeg = cv2.imencode(".jpg", smooth_rgb())
    bad = [
        (compressed(b""), "no data"),
        (compressed(b"", "png"), "no data"),
        (compressed(RNG.integers(0, 256, 300, dtype=np.uint8).tobytes()), "corrupt"),
        (compressed(jpeg.tobytes()[: len(jpeg) // 2]), "corrupt"),
        (compressed(jpeg.tobytes()[:20]), "corrupt"),
    ]
    for msg, match in bad:
        with pytest.raises(ImageConversionError, match=match):
            compressed_msg_to_array(msg)
        with pytest.raises(ImageConversionError, match=match):
            msg_to_array(msg)
    with pytest.raises(ImageConversionError, match="unsupported encoding"):
        compressed_msg_to_array(compressed(jpeg.tobytes()), "yuv422")


def test_not_an_image_message():
    with pytest.raises(ImageConversionError, match="not an image message"):
        msg_to_array(SimpleNamespace(height=1))


@needs_sensor_msgs
@pytest.mark.parametrize(
    "array, encoding, match",
    [
        (RGB.astype(np.float32), "rgb8", "needs uint8 with 3"),
        (RGB[..., 0], "rgb8", "needs uint8 with 3"),
        (RGB, "mono16", "needs uint16 with 1"),
        (RGB, "rgb7", "unsupported image encoding"),
        (np.zeros((0, 4, 3), np.uint8), "rgb8", "non-empty"),
        (np.zeros(5, np.uint8), "mono8", "non-empty HxW"),
        ([[1, 2], [3, 4]], "mono8", "numpy array"),
    ],
)
def test_bad_array_to_image_msg(array, encoding, match):
    with pytest.raises(ImageConversionError, match=match):
        array_to_image_msg(array, encoding)


@needs_sensor_msgs
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fmt="bmp"), "unsupported compressed format"),
        (dict(quality=101), "quality"),
        (dict(encoding="mono16"), "cannot write 'mono16' as jpeg"),
        (dict(encoding="mono8"), "needs uint8 with 1"),
    ],
)
def test_bad_array_to_compressed_msg(kwargs, match):
    with pytest.raises(ImageConversionError, match=match):
        array_to_compressed_msg(RGB, **kwargs)


def test_error_is_a_value_error():
    assert issubclass(ImageConversionError, ValueError)


# --- hostile frames: size limit from the header, corrupt JPEG data (issue 17.4, 17.5, 17.7) ---


def png_bomb(width=16000, height=16000):
    """A constant-colour PNG of width x height: a few hundred kB that decode to gigabytes.
    Built row by row with zlib (never the whole image in memory)."""
    import struct
    import zlib

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    z = zlib.compressobj(9)
    row = b"\x00" + bytes(3 * width)  # filter byte + one black RGB row
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def corrupt_jpeg(flips=50, seed=1):
    """A good JPEG with `flips` bytes of its entropy-coded data changed: OpenCV decodes it
    into a 'good' image (grey blocks), printing libjpeg's warning to stderr only."""
    _, jpeg = cv2.imencode(".jpg", smooth_rgb(240, 320), [cv2.IMWRITE_JPEG_QUALITY, 90])
    data = bytearray(jpeg.tobytes())
    sos = data.index(b"\xff\xda")  # start of scan: entropy-coded data follows its header
    rng = np.random.default_rng(seed)
    for i in rng.integers(sos + 20, len(data) - 2, flips):
        data[i] ^= 0x5A
    return bytes(data)


def test_png_bomb_is_refused_from_its_header_before_decoding():
    import resource
    import time

    data = png_bomb()
    assert len(data) < 1_000_000  # small on the wire, 768 MB decoded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(
        ImageConversionError,
        match="16000x16000 = 256,000,000 pixels is over the max_pixels limit of 50,000,000",
    ):
        compressed_msg_to_array(compressed(data, "png"))
    assert time.perf_counter() - t0 < 1.0
    grew_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grew_kb < 50_000, f"peak RSS grew {grew_kb} kB: the frame was decoded"
    # the limit is an argument: a smaller one refuses a small frame, None lifts it
    small = compressed(cv2.imencode(".png", smooth_rgb(30, 40))[1].tobytes(), "png")
    with pytest.raises(
        ImageConversionError, match="40x30 = 1,200 pixels is over the max_pixels limit of 1,000"
    ):
        msg_to_array(small, max_pixels=1000)
    assert msg_to_array(small, max_pixels=1200).shape == (30, 40, 3)
    assert msg_to_array(small, max_pixels=None).shape == (30, 40, 3)


def test_huge_dimensions_in_a_header_are_refused_without_reading_the_data():
    raw = raw_msg(RGB, "rgb8", height=100_000, width=100_000, step=300_000)
    with pytest.raises(ImageConversionError, match="100000x100000 = 10,000,000,000 pixels is over"):
        msg_to_array(raw)
    with pytest.raises(
        ImageConversionError, match="10x6 = 60 pixels is over the max_pixels limit of 59:"
    ):
        msg_to_array(GOOD, max_pixels=59)  # 6x10 = 60 pixels
    assert msg_to_array(GOOD, max_pixels=60).shape == (6, 10, 3)
    # a JPEG's SOF says 60000x60000: refused from the header
    _, jpeg = cv2.imencode(".jpg", smooth_rgb(8, 8))
    data = bytearray(jpeg.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    with pytest.raises(ImageConversionError, match="60000x60000"):
        msg_to_array(compressed(bytes(data)))


def test_corrupt_jpeg_data_is_an_error_not_a_grey_frame():
    from pvt_mtl_ros.ros.image_conversion import JPEG_CHECKED, CorruptImageError

    assert JPEG_CHECKED, "simplejpeg (requirements.txt) is not installed"
    data = corrupt_jpeg()
    # what the node did before: OpenCV returns an image and only prints to stderr
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(CorruptImageError, match=r"corrupt JPEG data \(\d+ bytes\): libjpeg: "):
        msg_to_array(compressed(data))
    good = cv2.imencode(".jpg", smooth_rgb(240, 320))[1].tobytes()
    for target in ("rgb8", "bgr8", "mono8", "passthrough"):
        ours = msg_to_array(compressed(good), target)
        flag = cv2.IMREAD_GRAYSCALE if target == "mono8" else cv2.IMREAD_COLOR
        ref = cv2.imdecode(np.frombuffer(good, np.uint8), flag)
        ref = cv2.cvtColor(ref, cv2.COLOR_BGR2RGB) if target == "rgb8" else ref
        assert ours.shape == ref.shape and ours.dtype == np.uint8, target
        assert np.abs(ours.astype(int) - ref).mean() < 2.0, target  # two IDCTs, same image


def test_grey_jpeg_decodes_to_rgb():
    grey = cv2.imencode(".jpg", smooth_rgb(20, 30)[..., 0])[1].tobytes()
    rgb = msg_to_array(compressed(grey))
    assert rgb.shape == (20, 30, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert msg_to_array(compressed(grey), "passthrough").shape == (20, 30)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuyv", "yuv422_yuy2"])
def test_yuv422_with_an_odd_width_is_one_clear_line(encoding):
    msg = raw_msg(np.full((4, 5, 2), 128, np.uint8), encoding)
    with pytest.raises(ImageConversionError) as err:
        msg_to_array(msg)
    text = str(err.value)
    assert f"{encoding} image has an odd width 5" in text and "must be even" in text
    assert "\n" not in text and "Assertion" not in text
