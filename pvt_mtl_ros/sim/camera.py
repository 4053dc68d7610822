"""Pinhole camera over a flat ground plane.

World frame: X right, Y up (metres above the ground), Z forward; the camera stands at
(0, height, 0) and is pitched down by `pitch` (radians, negative looks up).
"""

from __future__ import annotations

import math

import numpy as np

SUBPIXEL_BITS = 4  # cv2 drawing `shift`: vertices carry 1/16 pixel
_SCALE = float(1 << SUBPIXEL_BITS)
_LIMIT = float(1 << 26)  # keeps far off-screen vertices inside int32 after the shift


class Camera:
    def __init__(self, width: int, height: int, hfov_deg: float, cam_height: float, pitch: float):
        self.width, self.height = width, height
        self.f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2)
        self.cx, self.cy = width / 2.0, height / 2.0
        self.cam_height, self.pitch = cam_height, pitch
        self._c, self._s = math.cos(pitch), math.sin(pitch)
        self.horizon = self.cy - self.f * math.tan(pitch)  # row of the vanishing line

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(N,3) world points -> (N,2) float pixel coordinates."""
        dy = pts[:, 1] - self.cam_height
        zc = np.maximum(pts[:, 2] * self._c - dy * self._s, 0.05)
        yc = -dy * self._c - pts[:, 2] * self._s
        k = self.f / zc
        return np.stack((self.cx + pts[:, 0] * k, self.cy + yc * k), axis=1)

    def project_fixed(self, pts: np.ndarray) -> np.ndarray:
        """(N,2) int32 fixed-point pixels for cv2 drawing with shift=SUBPIXEL_BITS."""
        uv = self.project(pts) * _SCALE
        np.clip(uv, -_LIMIT, _LIMIT, out=uv)
        return np.rint(uv).astype(np.int32)

    def point(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """One point -> (u, v, depth)."""
        dy = y - self.cam_height
        zc = max(z * self._c - dy * self._s, 0.05)
        return (
            self.cx + x * self.f / zc,
            self.cy + (-dy * self._c - z * self._s) * self.f / zc,
            zc,
        )

    def ground_distance(self, rows: np.ndarray) -> np.ndarray:
        """Forward distance Z of the ground seen at image rows (inf at and above the horizon)."""
        t = (np.asarray(rows, dtype=np.float64) - self.cy) / self.f
        den = t * self._c + self._s
        with np.errstate(divide="ignore", invalid="ignore"):
            z = self.cam_height * (self._c - t * self._s) / den
        return np.where(den > 1e-6, z, np.inf)
