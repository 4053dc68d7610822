"""Image-folder helpers shared by the datasets: listing and decoding image files.

(An image folder with a COCO json is :class:`training.datasets.coco.CocoDetection`.)
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    require_dir(folder, "image folder")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image(path: Path) -> tv_tensors.Image:
    """uint8 CHW RGB (grey, palette and CMYK files converted; EXIF orientation not applied,
    as COCO's boxes refer to the stored pixels).

    PIL rather than torchvision.io, whose decoders are deprecated from torchvision 0.29.
    """
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with PILImage.open(path) as image:
        return tv_tensors.Image(pil_to_tensor(image.convert("RGB")))
