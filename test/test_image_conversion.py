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
    with pytest.raises(ImageConversionError, match="cannot convert"):
        image_msg_to_array(raw_msg(np.zeros((2, 3, 2), np.uint8), "yuv422"), "rgb8")  # odd width


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
