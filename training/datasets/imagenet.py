"""ImageNet-style classification: class folders, or a flat folder with a label file."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchvision.models import ResNet18_Weights

from training.datasets.folder import list_images, read_image, require_dir


def imagenet1k_classes() -> list[str]:
    """The 1000 ILSVRC-2012 class names in index order (sorted WordNet ids), as torchvision
    ships them (no download)."""
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class _LabelledImages(torch.utils.data.Dataset):
    """``(image, {"label"})`` from ``self.samples``: a list of (path, class index)."""

    tasks = frozenset({"classification"})
    classes: list[str]
    samples: list[tuple[Path, int]]
    transforms: Callable | None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image, target = read_image(path), {"label": torch.tensor(label, dtype=torch.int64)}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class ImageNetFolder(_LabelledImages):
    """``root/<wnid>/*.JPEG`` (the ImageNet train layout, or val sorted into class folders).

    ``classes`` are the sorted folder names, so with the 1000 ILSVRC-2012 folders the label is
    the standard 0-based ILSVRC index.
    """

    def __init__(self, root: str | Path, transforms: Callable | None = None) -> None:
        root = require_dir(Path(root), "ImageNet class-folder root")
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"no class folders in {root}")
        self.samples = [
            (path, label) for label, wnid in enumerate(self.classes)
            for path in list_images(root / wnid)
        ]  # fmt: skip
        self.transforms = transforms


class ImageNetList(_LabelledImages):
    """A flat image folder with a label file giving each file its 0-based class index.

    Label file formats (tab, comma or space separated):

    - with a header naming a file column (``file``/``filename``/``image``) and an index column
      (``class_index``/``label``/``index``), e.g. the shared sample's ``labels.tsv``
      (``file  wnid  class_index``);
    - without a header: ``<file> <index>`` per line (the Caffe ``val.txt``).

    ``classes`` defaults to the ImageNet-1k names (:func:`imagenet1k_classes`).
    """

    FILE_COLUMNS = ("file", "filename", "image")
    INDEX_COLUMNS = ("class_index", "label", "index")

    def __init__(
        self,
        image_dir: str | Path,
        labels_file: str | Path,
        classes: Sequence[str] | None = None,
        transforms: Callable | None = None,
    ) -> None:
        image_dir = require_dir(Path(image_dir), "ImageNet image folder")
        labels_file = Path(labels_file)
        if not labels_file.is_file():
            raise FileNotFoundError(f"label file not found: {labels_file}")
        self.classes = list(classes) if classes is not None else imagenet1k_classes()
        self.transforms = transforms
        self.samples = []
        for name, label in self._read_labels(labels_file):
            if not 0 <= label < len(self.classes):
                raise ValueError(
                    f"{labels_file}: {name} has class index {label}, outside "
                    f"0..{len(self.classes) - 1}"
                )
            path = image_dir / name
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path} (listed in {labels_file})")
            self.samples.append((path, label))

    @classmethod
    def _read_labels(cls, labels_file: Path) -> list[tuple[str, int]]:
        lines = [ln for ln in labels_file.read_text().splitlines() if ln.strip()]
        if not lines:
            return []
        delimiter = "\t" if "\t" in lines[0] else "," if "," in lines[0] else None
        if delimiter is None:
            rows = [ln.split() for ln in lines]
        else:
            rows = [[c.strip() for c in row] for row in csv.reader(lines, delimiter=delimiter)]
        header = [c.lower() for c in rows[0]]
        if header[-1].lstrip("-").isdigit():  # no header: <file> <index>
            file_col, index_col = 0, len(header) - 1
        else:
            file_col = next((header.index(c) for c in cls.FILE_COLUMNS if c in header), None)
            index_col = next((header.index(c) for c in cls.INDEX_COLUMNS if c in header), None)
            if file_col is None or index_col is None:
                raise ValueError(
                    f"{labels_file}: header {rows[0]} needs a file column {cls.FILE_COLUMNS} "
                    f"and a class index column {cls.INDEX_COLUMNS}"
                )
            rows = rows[1:]
        try:
            return [(row[file_col], int(row[index_col])) for row in rows]
        except (IndexError, ValueError) as err:
            raise ValueError(f"{labels_file}: malformed row ({err})") from err
