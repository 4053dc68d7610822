"""Image messages <-> numpy arrays, with or without a ROS 2 install.

Colour conversion of raw ``sensor_msgs/Image`` uses ``cv_bridge`` where it imports (a ROS 2
install) and ``rosbags.image`` otherwise; compressed frames are coded with OpenCV directly in
both cases. Messages may be rclpy messages or rosbags' own. Arrays are RGB unless asked
otherwise. Every bad input raises :class:`ImageConversionError`, in one line.

Hostile input: a frame over ``max_pixels`` (width x height; default 50 MP) is refused from
its header before anything is decoded: the raw message's width and height, the compressed
stream's own header (JPEG SOF, PNG IHDR, ... read by simplejpeg or Pillow without decoding).
JPEGs decode through libjpeg-turbo (simplejpeg) in strict mode, so libjpeg's "Corrupt JPEG
data" warnings, which OpenCV only prints to stderr while returning grey blocks as a good
image, raise :class:`CorruptImageError` instead.

``sensor_msgs`` is imported only to build messages (array -> message).
"""

from __future__ import annotations

import array as pyarray
import io
import re
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage

try:  # libjpeg-turbo with its warnings as errors; without it JPEGs decode unchecked (OpenCV)
    import simplejpeg
except ImportError:
    simplejpeg = None
JPEG_CHECKED = simplejpeg is not None

try:  # ROS 2 install
    from cv_bridge import CvBridge

    _BRIDGE: Any = CvBridge()
    BACKEND = "cv_bridge"
except ImportError:
    _BRIDGE = None
    try:
        from rosbags.image import image as _rosbags_image

        BACKEND = "rosbags"
    except ImportError:  # neither: raw passthrough and compressed frames still work
        _rosbags_image = None
        BACKEND = "none"


class ImageConversionError(ValueError):
    """An image message or array that cannot be converted."""


class FrameTooLargeError(ImageConversionError):
    """A frame over the pixel limit, refused from its header before decoding."""


class CorruptImageError(ImageConversionError):
    """A compressed frame whose decoder reported corrupt data (it would decode as garbage)."""


DEFAULT_MAX_PIXELS = 50_000_000
JPEG_MAGIC, PNG_MAGIC = b"\xff\xd8", b"\x89PNG\r\n\x1a\n"
# 4:2:2 packed YUV: two pixels share one U and one V, so the width must be even
YUV422 = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")


def _one_line(err: BaseException) -> str:
    """A library's message on one line (OpenCV's carry file paths and newlines)."""
    text = " ".join(str(err).split())
    found = re.search(r"error: \(-?\d+:[^)]*\) (.*)", text)  # OpenCV: keep the reason
    return found.group(1) if found else text


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """FrameTooLargeError when width*height is over `max_pixels` (None: no limit)."""
    if max_pixels is not None and width * height > max_pixels:
        raise FrameTooLargeError(
            f"{what} of {width}x{height} = {width * height:,} pixels is over the max_pixels "
            f"limit of {max_pixels:,}: dropped before decoding"
        )


# encoding -> (numpy dtype, channels); the encodings of sensor_msgs/image_encodings.hpp
# that have one pixel per array element (so not nv12/nv21).
ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("uint8", 3),
    "bgr8": ("uint8", 3),
    "rgba8": ("uint8", 4),
    "bgra8": ("uint8", 4),
    "mono8": ("uint8", 1),
    "rgb16": ("uint16", 3),
    "bgr16": ("uint16", 3),
    "rgba16": ("uint16", 4),
    "bgra16": ("uint16", 4),
    "mono16": ("uint16", 1),
    "yuv422": ("uint8", 2),
    "uyvy": ("uint8", 2),
    "yuv422_yuy2": ("uint8", 2),
    "yuyv": ("uint8", 2),
}
for _pattern in ("rggb", "bggr", "gbrg", "grbg"):
    ENCODINGS[f"bayer_{_pattern}8"] = ("uint8", 1)
    ENCODINGS[f"bayer_{_pattern}16"] = ("uint16", 1)

_GENERIC = re.compile(r"(8U|8S|16U|16S|32S|32F|64F)(?:C([1-4]))?")
_GENERIC_DTYPES = {
    "8U": "uint8",
    "8S": "int8",
    "16U": "uint16",
    "16S": "int16",
    "32S": "int32",
    "32F": "float32",
    "64F": "float64",
}
_COMPRESSED_TARGETS = ("rgb8", "bgr8", "mono8", "passthrough")
# Errors the backends raise for data they cannot convert.
_BACKEND_ERRORS: tuple[type[BaseException], ...] = (cv2.error, ValueError, TypeError)
if _BRIDGE is not None:
    from cv_bridge import CvBridgeError

    _BACKEND_ERRORS += (CvBridgeError,)
if _rosbags_image is not None:
    _BACKEND_ERRORS += (_rosbags_image.ImageError,)


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(dtype, channels) of a ``sensor_msgs/Image`` encoding such as ``rgb8`` or ``16UC1``."""
    if encoding in ENCODINGS:
        dtype, channels = ENCODINGS[encoding]
        return np.dtype(dtype), channels
    match = _GENERIC.fullmatch(encoding)
    if match:
        return np.dtype(_GENERIC_DTYPES[match.group(1)]), int(match.group(2) or 1)
    raise ImageConversionError(f"unsupported image encoding {encoding!r}")


def _check_target(encoding: str) -> None:
    if encoding != "passthrough":
        encoding_layout(encoding)


def _buffer(data: Any) -> np.ndarray:
    """The message's data as a flat uint8 array (rclpy: array.array, rosbags: ndarray)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a list, or a non-contiguous array
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ImageConversionError(f"image data is not a byte sequence: {err}") from None


def _raw_pixels(msg: Any, max_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate an Image message; return its pixels (HxW or HxWxC, honouring step) and the
    flat data buffer they may share memory with."""
    dtype, channels = encoding_layout(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"image has no pixels: height={height}, width={width}")
    check_pixels(width, height, max_pixels, f"{msg.encoding} image")
    if msg.encoding in YUV422 and width % 2:
        raise ImageConversionError(
            f"{msg.encoding} image has an odd width {width}: 4:2:2 YUV packs two pixels per "
            "U/V pair, so the width must be even"
        )
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError("image data is empty")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes or step % dtype.itemsize:
        raise ImageConversionError(
            f"wrong step {step} for width {width} and encoding {msg.encoding!r} "
            f"(needs a multiple of {dtype.itemsize} of at least {row_bytes} bytes per row)"
        )
    if buf.size < step * height:
        raise ImageConversionError(
            f"image data has {buf.size} bytes, fewer than step*height = {step}*{height}"
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    pixels = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    pixels = pixels.astype(dtype, copy=False)  # to native byte order
    shape = (height, width) if channels == 1 else (height, width, channels)
    return pixels.reshape(shape), buf


def _owned(result: np.ndarray, buf: np.ndarray) -> np.ndarray:
    """A writable, contiguous array that does not alias the message's data."""
    if np.may_share_memory(result, buf) or not result.flags.writeable:
        return np.array(result, copy=True, order="C")
    return np.ascontiguousarray(result)


def image_msg_to_array(
    msg: Any, encoding: str = "rgb8", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """``sensor_msgs/Image`` -> array in ``encoding`` (``rgb8``: uint8 HxWx3 RGB).

    ``passthrough`` returns the pixels as stored (e.g. uint16 HxW for ``mono16`` labels).
    ``max_pixels``: width x height above which the frame is refused (None: no limit).
    """
    _check_target(encoding)
    pixels, buf = _raw_pixels(msg, max_pixels)  # validates the message whatever the backend
    if encoding in ("passthrough", msg.encoding):
        return _owned(pixels, buf)
    if BACKEND == "none":
        raise ImageConversionError(
            f"converting {msg.encoding!r} to {encoding!r} needs cv_bridge or rosbags-image; "
            "only encoding='passthrough' works without them"
        )
    try:
        if _BRIDGE is not None:
            result = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding=encoding)
        else:
            result = _rosbags_image.convert_color(pixels, msg.encoding, encoding)
    except _BACKEND_ERRORS as err:
        raise ImageConversionError(
            f"cannot convert {msg.encoding!r} to {encoding!r}: {_one_line(err)}"
        ) from None
    return _owned(np.asarray(result), buf)


def compressed_size(buf: np.ndarray, fmt: str = "") -> tuple[int, int]:
    """(width, height) from a compressed stream's header, without decoding its pixels."""
    head = buf[:24].tobytes()
    try:
        if head.startswith(PNG_MAGIC) and head[12:16] == b"IHDR":  # the first chunk, always
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if head.startswith(JPEG_MAGIC) and simplejpeg is not None:
            height, width, _, _ = simplejpeg.decode_jpeg_header(buf)
            return int(width), int(height)
        # Pillow reads only the header here (JPEG SOF, BMP, TIFF, WebP, ...)
        with PILImage.open(io.BytesIO(buf)) as image:
            return image.size
    except PILImage.DecompressionBombError as err:  # Pillow's own limit, far above ours
        raise FrameTooLargeError(
            f"compressed image over Pillow's decompression-bomb limit: {_one_line(err)}"
        ) from None
    except Exception as err:  # UnidentifiedImageError, ValueError, struct errors ...
        raise ImageConversionError(
            f"corrupt or unsupported compressed image (format {fmt!r}, {buf.size} bytes): "
            f"its header cannot be read: {_one_line(err)}"
        ) from None


def _decode_jpeg(buf: np.ndarray, encoding: str) -> np.ndarray | None:
    """libjpeg-turbo, strict: a corrupt-data warning raises CorruptImageError. None where
    simplejpeg cannot produce the target from this stream (CMYK): OpenCV decodes it."""
    _, _, colorspace, _ = simplejpeg.decode_jpeg_header(buf)
    if colorspace in ("CMYK", "YCCK"):
        return None
    target = {"rgb8": "RGB", "bgr8": "BGR", "mono8": "GRAY"}.get(encoding)
    if target is None:  # passthrough: what OpenCV's IMREAD_UNCHANGED gives for a JPEG
        target = "GRAY" if colorspace == "Gray" else "BGR"
    try:
        image = simplejpeg.decode_jpeg(buf, colorspace=target, strict=True)
    except ValueError as err:
        raise CorruptImageError(
            f"corrupt JPEG data ({buf.size} bytes): libjpeg: {_one_line(err)}"
        ) from None
    return image[:, :, 0] if target == "GRAY" else image


def compressed_msg_to_array(
    msg: Any, encoding: str = "rgb8", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> array.

    ``encoding``: ``rgb8`` (default), ``bgr8``, ``mono8``, or ``passthrough`` (as decoded by
    OpenCV: BGR(A) order, 16-bit PNG kept 16-bit). ``max_pixels``: width x height, read
    from the stream's header, above which the frame is refused before decoding (None: no
    limit). A JPEG with corrupt data raises CorruptImageError (when simplejpeg is installed).
    """
    if encoding not in _COMPRESSED_TARGETS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r} for compressed images; "
            f"use one of {', '.join(_COMPRESSED_TARGETS)}"
        )
    buf = _buffer(msg.data)
    if buf.size == 0:
        raise ImageConversionError(f"compressed image ({msg.format!r}) has no data")
    if max_pixels is not None:
        width, height = compressed_size(buf, msg.format)
        check_pixels(width, height, max_pixels, "compressed image")
    if JPEG_CHECKED and buf[:2].tobytes() == JPEG_MAGIC:
        try:
            image = _decode_jpeg(buf, encoding)
        except CorruptImageError:
            raise
        except ValueError as err:  # the header itself is unreadable
            raise ImageConversionError(
                f"corrupt or unsupported compressed image (format {msg.format!r}, "
                f"{buf.size} bytes): {_one_line(err)}"
            ) from None
        if image is not None:
            return image
    flags = {
        "rgb8": cv2.IMREAD_COLOR,  # BGR; converted below
        "bgr8": cv2.IMREAD_COLOR,
        "mono8": cv2.IMREAD_GRAYSCALE,
        "passthrough": cv2.IMREAD_UNCHANGED,
    }[encoding]
    try:
        image = cv2.imdecode(buf, flags)
    except cv2.error as err:
        image, reason = None, f": {_one_line(err)}"
    else:
        reason = ""
    if image is None:
        raise ImageConversionError(
            f"corrupt or unsupported compressed image (format {msg.format!r}, "
            f"{buf.size} bytes){reason}"
        )
    if encoding == "rgb8":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def msg_to_array(
    msg: Any, encoding: str = "rgb8", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Either image message type -> array (see the two functions above)."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_msg_to_array(msg, encoding, max_pixels)
    if all(hasattr(msg, name) for name in ("encoding", "height", "width", "step", "data")):
        return image_msg_to_array(msg, encoding, max_pixels)
    raise ImageConversionError(f"not an image message: {type(msg).__name__}")


def _check_array(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or image.size == 0:
        raise ImageConversionError(f"expected a non-empty HxW or HxWxC array, got {image.shape}")
    return image


def array_to_image_msg(image: np.ndarray, encoding: str, header: Any = None) -> Any:
    """Array -> ``sensor_msgs/Image`` (rclpy); ``encoding`` says what the array holds."""
    from sensor_msgs.msg import Image  # only here: the rest works without ROS

    image = _check_array(image)
    dtype, channels = encoding_layout(encoding)
    shape_channels = 1 if image.ndim == 2 else image.shape[2]
    if shape_channels != channels or image.dtype != dtype:
        raise ImageConversionError(
            f"encoding {encoding!r} needs {dtype} with {channels} channel(s), "
            f"got {image.dtype} with shape {image.shape}"
        )
    little = np.ascontiguousarray(image, dtype=dtype.newbyteorder("<"))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * dtype.itemsize
    # array.array takes rclpy's fast path; a bytes object is checked element by element.
    msg.data = pyarray.array("B", little.tobytes())
    return msg


def array_to_compressed_msg(
    image: np.ndarray,
    fmt: str = "jpeg",
    header: Any = None,
    quality: int = 90,
    encoding: str = "rgb8",
) -> Any:
    """Array -> ``sensor_msgs/CompressedImage`` (rclpy) in ``fmt`` ``jpeg`` or ``png``.

    ``encoding`` says what the array holds: ``rgb8`` (default), ``bgr8``, ``mono8``, or
    ``mono16`` (PNG only, e.g. label images). ``quality`` (0-100) applies to JPEG.
    """
    from sensor_msgs.msg import CompressedImage

    image = _check_array(image)
    fmt = {"jpg": "jpeg"}.get(fmt, fmt)
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    if not 0 <= quality <= 100:
        raise ImageConversionError(f"JPEG quality must be in 0..100, got {quality}")
    allowed = ("rgb8", "bgr8", "mono8") + (("mono16",) if fmt == "png" else ())
    if encoding not in allowed:
        raise ImageConversionError(f"cannot write {encoding!r} as {fmt}; use one of {allowed}")
    dtype, channels = encoding_layout(encoding)
    if image.dtype != dtype or (1 if image.ndim == 2 else image.shape[2]) != channels:
        raise ImageConversionError(
            f"encoding {encoding!r} needs {dtype} with {channels} channel(s), "
            f"got {image.dtype} with shape {image.shape}"
        )
    if encoding == "rgb8":
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", image, params)
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode the image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = pyarray.array("B", encoded.tobytes())
    return msg


__all__ = [
    "BACKEND",
    "DEFAULT_MAX_PIXELS",
    "ENCODINGS",
    "JPEG_CHECKED",
    "CorruptImageError",
    "FrameTooLargeError",
    "ImageConversionError",
    "array_to_compressed_msg",
    "array_to_image_msg",
    "check_pixels",
    "compressed_msg_to_array",
    "compressed_size",
    "encoding_layout",
    "image_msg_to_array",
    "msg_to_array",
]
