"""Images of any size in, per-image results in the images' own pixels out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import letterbox_batch, to_chw_uint8


@dataclass
class PredictionResult:
    """One image's outputs; a task the model lacks leaves its fields None."""

    boxes: np.ndarray | None = None  # float32 [N,4] XYXY, original image pixels
    scores: np.ndarray | None = None  # float32 [N]
    labels: np.ndarray | None = None  # int64 [N], index into the detection classes
    mask: np.ndarray | None = None  # uint8 (uint16 past 256 classes) [H,W], original size
    class_probs: np.ndarray | None = None  # float32 [K]


@torch.inference_mode()
def predict(
    model,
    images,
    tasks: tuple[str, ...] | None = None,
    score_thresh: float | None = None,
    nms_iou: float | None = None,
    max_detections: int | None = None,
    pad_to_input: bool = False,
) -> list[PredictionResult]:
    """Letterbox -> network -> decode, for a list of images (numpy HxWx3 RGB or 3xHxW uint8)."""
    if isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 3:
        images = [images]
    if len(images) == 0:
        return []
    device = model.mean.device
    chw = [to_chw_uint8(im).to(device, non_blocking=True) for im in images]
    batch, boxes = letterbox_batch(chw, model.cfg.input_size, pad_to_input=pad_to_input)
    out = model(model.normalize(batch), tasks=tasks)
    results = [PredictionResult() for _ in images]

    if "classification" in out:
        probs = out["classification"].float().softmax(dim=1).cpu().numpy()
        for r, p in zip(results, probs):
            r.class_probs = p
    if "detection" in out:
        dets = model.heads["detection"].decode(
            out["detection"], [b.resized for b in boxes], score_thresh, nms_iou, max_detections
        )
        for r, det, box in zip(results, dets, boxes):
            r.boxes = box.boxes_to_original(det["boxes"]).cpu().numpy().astype(np.float32)
            r.scores = det["scores"].cpu().numpy().astype(np.float32)
            r.labels = det["labels"].cpu().numpy().astype(np.int64)
    if "segmentation" in out or "segmentation_ids" in out:
        # a graph engine may return the argmax already ("segmentation_ids", uint8 [B,H,W])
        logits = out.get("segmentation")
        given = out.get("segmentation_ids")
        dtype = torch.uint8 if logits is None or logits.shape[1] <= 256 else torch.int32
        for i, (r, box) in enumerate(zip(results, boxes)):
            h, w = box.resized
            if given is not None:
                ids = given[i, :h, :w].clone()  # it views the engine's buffer
            else:
                ids = logits[i, :, :h, :w].argmax(dim=0).to(dtype)
            if box.resized != box.original:
                ids = F.interpolate(
                    ids[None, None].float(), size=box.original, mode="nearest-exact"
                )
                ids = ids[0, 0].to(dtype)
            mask = ids.cpu().numpy()
            r.mask = mask if dtype == torch.uint8 else mask.astype(np.uint16)
    return results
