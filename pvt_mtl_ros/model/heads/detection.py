"""Anchor-free dense detection (FCOS, Tian et al. 2019): head, loss and decoding side by side.

The convolutional head and its loss (sigmoid focal + GIoU + centerness BCE) are torchvision's
`FCOSHead`; this module adds what torchvision keeps inside its `FCOS` wrapper: one point per
location, the centre-sampling / scale-range assignment, and score-filter + top-k + batched NMS.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import batched_nms, clip_boxes_to_image

STRIDES = (8, 16, 32, 64, 128)  # P3..P7
OUTPUT_KEYS = ("cls_logits", "bbox_regression", "bbox_ctrness")  # the conv head's, in order


class DetectionHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_convs: int = 4,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.05,
        nms_iou: float = 0.6,
        max_detections: int = 100,
        topk_candidates: int = 1000,
    ) -> None:
        super().__init__()
        self.head = FCOSHead(
            in_channels, num_anchors=1, num_classes=num_classes, num_convs=num_convs
        )
        # torchvision's GroupNorm(32, C) leaves one value per group on a 1x1 P7 map when
        # C == 32 (a 128-px input), which GroupNorm refuses: use 2+ channels per group.
        for module in self.head.modules():
            if isinstance(module, nn.GroupNorm) and module.num_channels // module.num_groups < 2:
                module.num_groups = module.num_channels // 2
        # The box branch ends in a ReLU and torchvision starts it at ~0 (std-0.01 weights, zero
        # bias). From random weights a side can then sit below zero at nearly every location, and
        # GIoU on a zero-width (or zero-height) box has no gradient: the branch never recovers
        # (loss_det_box stuck at 1.0, as in tianzhi0549/FCOS#310). Start every side at one
        # stride instead, where the original FCOS's exp(0) starts it.
        nn.init.constant_(self.head.regression_head.bbox_reg.bias, 1.0)
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.num_classes = num_classes
        self.center_sampling_radius = center_sampling_radius
        self.score_thresh = score_thresh
        self.nms_iou = nms_iou
        self.max_detections = max_detections
        self.topk_candidates = topk_candidates

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """P3..P7 -> cls_logits [B,A,C], bbox_regression [B,A,4], bbox_ctrness [B,A,1], anchors."""
        out = self.raw(feats)
        out["anchors"] = self.points(feats)
        return out

    def raw(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The conv head's outputs (OUTPUT_KEYS) without the anchors, which depend on the input
        size alone: an exported graph then holds no size-only constants."""
        return self.head(feats)

    @staticmethod
    def points(feats: list[torch.Tensor]) -> torch.Tensor:
        """One square 'anchor' per location, centred on it, side = the level's stride. [A, 4]."""
        boxes = []
        for feat, stride in zip(feats, STRIDES):
            h, w = feat.shape[-2:]
            ys = (torch.arange(h, device=feat.device, dtype=torch.float32) + 0.5) * stride
            xs = (torch.arange(w, device=feat.device, dtype=torch.float32) + 0.5) * stride
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            c = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 4)
            half = torch.tensor([-0.5, -0.5, 0.5, 0.5], device=feat.device) * stride
            boxes.append(c + half)
        return torch.cat(boxes)

    def match(self, anchors: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        """FCOS assignment: index of the matched gt box per point, -1 for background."""
        if gt_boxes.numel() == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        sizes = anchors[:, 2] - anchors[:, 0]
        gt_centers = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
        # centre sampling: the point lies within radius * stride of the box centre ...
        near = (centers[:, None, :] - gt_centers[None]).abs().max(dim=2).values
        match = near < self.center_sampling_radius * sizes[:, None]
        x, y = centers[:, 0:1], centers[:, 1:2]
        ltrb = torch.stack(
            [x - gt_boxes[:, 0], y - gt_boxes[:, 1], gt_boxes[:, 2] - x, gt_boxes[:, 3] - y], dim=2
        )
        match &= ltrb.min(dim=2).values > 0  # ... and inside the box
        # each level regresses a range of distances: [0,64] on P3 ... [512, inf) on P7
        lower = sizes * 4
        upper = sizes * 8
        lower[sizes == sizes.min()] = 0
        upper[sizes == sizes.max()] = float("inf")
        reach = ltrb.max(dim=2).values
        match &= (reach > lower[:, None]) & (reach < upper[:, None])
        # several candidates: the smallest box wins
        areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        score = match.float() * (1e8 - areas[None])
        best, idx = score.max(dim=1)
        idx[best < 1e-5] = -1
        return idx

    def loss(self, out: dict[str, torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """targets[i]: 'boxes' [N,4] XYXY in network-input pixels, 'labels' [N]."""
        anchors = out["anchors"]
        matched = [self.match(anchors, t["boxes"]) for t in targets]
        losses = self.head.compute_loss(targets, out, [anchors] * len(targets), matched)
        return {
            "det_cls": losses["classification"],
            "det_box": losses["bbox_regression"],
            "det_ctr": losses["bbox_ctrness"],
        }

    @staticmethod
    def candidate_scores(out: dict[str, torch.Tensor], i: int) -> torch.Tensor:
        """Image ``i``'s score per (point, class), flattened: sqrt(cls * ctrness), what the
        score threshold and the top-k of ``decode`` see."""
        cls = torch.sigmoid(out["cls_logits"][i].float())
        return torch.sqrt(cls * torch.sigmoid(out["bbox_ctrness"][i].float())).flatten()

    @torch.no_grad()
    def decode(
        self,
        out: dict[str, torch.Tensor],
        image_sizes: list[tuple[int, int]],
        score_thresh: float | None = None,
        nms_iou: float | None = None,
        max_detections: int | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Scores sqrt(cls * ctrness) > thresh, top-k, box decoding, clip, per-class NMS.

        Boxes are in network-input pixels, clipped to each image's (unpadded) `image_sizes`.
        """
        score_thresh = self.score_thresh if score_thresh is None else score_thresh
        nms_iou = self.nms_iou if nms_iou is None else nms_iou
        max_detections = self.max_detections if max_detections is None else max_detections
        anchors = out["anchors"]
        results = []
        for i, size in enumerate(image_sizes):
            scores = self.candidate_scores(out, i)
            keep = torch.where(scores > score_thresh)[0]
            scores = scores[keep]
            if scores.numel() > self.topk_candidates:
                scores, top = scores.topk(self.topk_candidates)
                keep = keep[top]
            point = keep // self.num_classes
            labels = keep % self.num_classes
            boxes = self.box_coder.decode(out["bbox_regression"][i][point].float(), anchors[point])
            boxes = clip_boxes_to_image(boxes, size)
            kept = batched_nms(boxes, scores, labels, nms_iou)[:max_detections]
            results.append({"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]})
        return results
