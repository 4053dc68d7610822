"""The drawing surface: colour and label drawn by the same calls, so they always agree.

The buffer is HxWx4 uint8: RGB plus a label code per pixel. Codes below FIRST_INSTANCE are
segmentation classes of "stuff"; FIRST_INSTANCE + k is the k-th object instance.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .atmosphere import Environment
from .camera import SUBPIXEL_BITS, Camera
from .classes import SKY
from .geometry import FILL, LINE, MULTI, RING, Element

FIRST_INSTANCE = 11
MAX_INSTANCES = 255 - FIRST_INSTANCE
_NOISE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


class Canvas:
    def __init__(self, cam: Camera, env: Environment):
        self.cam, self.env = cam, env
        self.h, self.w = cam.height, cam.width
        self.buf = np.zeros((self.h, self.w, 4), np.uint8)
        self.full_area: dict[int, int] = {}  # instance code -> pixels when drawn (unoccluded)
        self.extent: dict[int, tuple[int, int, int, int]] = {}  # code -> x0, y0, x1, y1 bound
        self.lights: list[tuple] = []

    # -- background -------------------------------------------------------------------------
    def sky_and_ground(self, ground_rgb, ground_code: int, rng: np.random.Generator) -> None:
        env, h = self.env, self.h
        hz = int(np.clip(math.ceil(self.cam.horizon), 0, h))
        words = self.buf.view(np.uint32).reshape(h, self.w)  # one RGBA pixel per word: fast fills
        if hz > 0:
            t = (np.arange(hz) / max(self.cam.horizon, 1.0))[:, None] ** 0.6
            top, hor = np.array(env.sky_top), np.array(env.sky_horizon)
            rows = np.empty((hz, 4), np.uint8)
            rows[:, :3] = top * (1 - t) + hor * t
            rows[:, 3] = SKY
            words[:hz] = rows.view(np.uint32)
            if env.clouds:
                self._clouds(rng, hz)
        if hz < h:
            pixel = np.array((*self.env.shade(ground_rgb, 0.0), ground_code), np.uint8)
            words[hz:] = pixel.view(np.uint32)[0]

    def _clouds(self, rng: np.random.Generator, hz: int) -> None:
        top, hor = self.env.sky_top, self.env.sky_horizon
        white = (235, 238, 242)
        for _ in range(int(rng.integers(2, 7))):
            v = rng.uniform(0.05, 0.8) * hz
            k = v / max(hz, 1)
            base = [top[i] * (1 - k) + hor[i] * k for i in range(3)]
            mix = rng.uniform(0.35, 0.7)
            col = tuple(int(base[i] * (1 - mix) + white[i] * mix) for i in range(3))
            u = rng.uniform(-0.1, 1.1) * self.w
            ax = rng.uniform(0.06, 0.2) * self.w
            for _ in range(3):
                cu, cv = u + rng.uniform(-0.6, 0.6) * ax, v + rng.uniform(-0.2, 0.2) * ax * 0.3
                axes = (int(ax * rng.uniform(0.4, 0.8)), int(ax * rng.uniform(0.1, 0.22)) + 1)
                cv2.ellipse(self.buf, (int(cu), int(cv)), axes, 0, 0, 360, (*col, SKY), -1)

    def ground(self, pts: np.ndarray, rgb, code: int, n: int = 0) -> None:
        """A polygon on the ground (or several of n vertices each), lit but not yet fogged."""
        uv = self.cam.project_fixed(pts)
        col = (*self.env.shade(rgb, 0.0), code)
        polys = [uv] if not n else uv.reshape(-1, n, 2)
        cv2.fillPoly(self.buf, polys, col, cv2.LINE_8, SUBPIXEL_BITS)

    def fog_ground(self) -> None:
        """Fade the ground by its distance, row by row (flat ground: the row fixes the distance)."""
        hz = int(np.clip(math.ceil(self.cam.horizon), 0, self.h))
        if hz >= self.h:
            return
        rows = np.arange(hz, self.h)
        z = self.cam.ground_distance(rows + 0.5)
        alpha = 1.0 - np.exp(-np.minimum(z, 1e4) * self.env.fog_density)
        steps = np.rint(alpha * 64).astype(np.int32)
        if steps.max() == 0:
            return
        fog = self.env.fog_rgb
        cuts = np.flatnonzero(np.diff(steps)) + 1
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(rows)].tolist()):
            a = steps[lo] / 64.0
            if a <= 0:
                continue
            # RGB towards the fog colour, the label channel through unchanged
            m = np.array(
                [
                    [1 - a, 0, 0, 0, fog[0] * a],
                    [0, 1 - a, 0, 0, fog[1] * a],
                    [0, 0, 1 - a, 0, fog[2] * a],
                    [0, 0, 0, 1, 0],
                ]
            )
            band = self.buf[hz + lo : hz + hi]
            cv2.transform(band, m, dst=band)

    # -- objects and props ------------------------------------------------------------------
    def draw(self, elements: list[Element]) -> None:
        """Painter's algorithm: far elements first. Records each instance's unoccluded area."""
        cam, env, buf = self.cam, self.env, self.buf
        for el in sorted(elements, key=lambda e: -e.dist):
            if not el.parts:
                continue
            uv_all = cam.project_fixed(np.concatenate([p[1] for p in el.parts]))
            alpha = env.fog_alpha(el.dist)
            i, pad = 0, 1
            for kind, pts, rgb, code, emissive, width, n in el.parts:
                uv = uv_all[i : i + len(pts)]
                i += len(pts)
                col = (*(env.emit(rgb, alpha) if emissive else env.shade(rgb, alpha)), code)
                if kind == FILL:
                    cv2.fillPoly(buf, [uv], col, cv2.LINE_8, SUBPIXEL_BITS)
                elif kind == MULTI:
                    cv2.fillPoly(buf, uv.reshape(-1, n, 2), col, cv2.LINE_8, SUBPIXEL_BITS)
                elif kind == RING:
                    cv2.fillPoly(buf, [uv[:n], uv[n:]], col, cv2.LINE_8, SUBPIXEL_BITS)
                elif kind == LINE:
                    t = max(1, int(round(width * cam.f / max(el.dist, 0.5))))
                    pad = max(pad, t)
                    cv2.polylines(buf, [uv], False, col, t, cv2.LINE_8, SUBPIXEL_BITS)
            if el.code >= FIRST_INSTANCE:
                self._record(el.code, uv_all, pad)
            if el.lights:
                codes = {p[3] for p in el.parts}
                self.lights.extend((lt, codes) for lt in el.lights)

    def _record(self, code: int, uv: np.ndarray, pad: int) -> None:
        """Pixels the instance covers right after it is drawn (nothing nearer drawn yet)."""
        lo = np.maximum((uv.min(0) >> SUBPIXEL_BITS) - pad, 0)
        hi = np.minimum((uv.max(0) >> SUBPIXEL_BITS) + pad + 1, (self.w, self.h))
        if (hi <= lo).any():
            self.full_area[code] = 0
            return
        crop = self.buf[lo[1] : hi[1], lo[0] : hi[0], 3]
        self.full_area[code] = int(np.count_nonzero(crop == code))
        self.extent[code] = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))

    # -- finishing --------------------------------------------------------------------------
    def finish(self, rng: np.random.Generator, headlights: bool) -> tuple[np.ndarray, np.ndarray]:
        """-> (RGB image, label codes). Lens softness, light glow, rain streaks, sensor noise."""
        rgb = cv2.cvtColor(self.buf, cv2.COLOR_RGBA2RGB)
        code = np.ascontiguousarray(self.buf[:, :, 3])
        sigma = 0.9 if self.env.weather == "rain" else 0.6
        cv2.GaussianBlur(rgb, (3, 3), sigma, dst=rgb)
        if self.env.night:
            self._glow(rgb, code, headlights)
        if self.env.weather == "rain":
            self._rain(rgb, rng)
        self._noise(rgb, rng, 2 if self.env.night else 1)
        return rgb, code

    def _glow(self, rgb: np.ndarray, code: np.ndarray, headlights: bool) -> None:
        """Halos around lights, drawn small and blurred, then added (light is additive)."""
        cam, k = self.cam, 4
        lw, lh = max(self.w // k, 1), max(self.h // k, 1)
        glow = np.zeros((lh, lw, 3), np.uint8)
        spread = 1.5 if self.env.weather != "clear" else 1.0  # haze spreads the light
        cap = max(2, self.w // (k * 40))
        for (p, radius, col, pool), codes in self.lights:
            u, v, zc = cam.point(p[0], p[1], p[2])
            if pool:
                r = radius * cam.f / zc / k
                ry = r * cam.cam_height / max(zc, 0.5) * 2.0
                if ry < 0.5 or not (-r < u / k < lw + r and -ry < v / k < lh + ry):
                    continue
                axes = (int(r) + 1, int(ry) + 1)
                cv2.ellipse(glow, (int(u / k), int(v / k)), axes, 0, 0, 360, col, -1, cv2.LINE_AA)
                continue
            if not (0 <= u < self.w and 0 <= v < self.h) or code[int(v), int(u)] not in codes:
                continue
            r = min(cap, max(1, int(radius * spread * cam.f / zc / k)))
            cv2.circle(
                glow, (int(u / k), int(v / k)), r, tuple(0.7 * c for c in col), -1, cv2.LINE_AA
            )
        if headlights:  # the ego car lights the road ahead: a soft stepped pool, blurred below
            pool = np.zeros_like(glow)
            for i in range(4):
                f = 1.0 - 0.22 * i
                axes = (int(lw * 0.45 * f) + 1, int(lh * 0.17 * f) + 1)
                pool[:] = 0
                cv2.ellipse(pool, (lw // 2, lh), axes, 0, 0, 360, (9, 9, 8), -1)
                cv2.add(glow, pool, dst=glow)
        sigma = max(1.0, 1.5 * self.w / 640)
        glow = cv2.GaussianBlur(glow, (0, 0), sigma)
        glow = cv2.resize(glow, (self.w, self.h), interpolation=cv2.INTER_LINEAR)
        cv2.add(rgb, glow, dst=rgb)

    def _rain(self, rgb: np.ndarray, rng: np.random.Generator) -> None:
        n = int(rng.uniform(250, 550) * self.w * self.h / 307200)
        slant = rng.uniform(-0.25, 0.25)
        x0 = rng.uniform(0, self.w, n)
        y0 = rng.uniform(0, self.h, n)
        length = rng.uniform(0.02, 0.05, n) * self.h
        x1 = x0 + slant * length + rng.normal(0, 0.5, n)
        y1 = y0 + length
        segs = np.rint(np.stack((x0, y0, x1, y1), 1)).astype(np.int32).reshape(n, 2, 2)
        layer = np.zeros((self.h, self.w), np.uint8)
        level = 22 if self.env.night else 40
        cv2.polylines(layer, segs, False, level, 1, cv2.LINE_8)
        cv2.add(rgb, cv2.cvtColor(layer, cv2.COLOR_GRAY2RGB), dst=rgb)

    def _noise(self, rgb: np.ndarray, rng: np.random.Generator, times: int) -> None:
        size = 1024
        while size < max(self.w, self.h):
            size *= 2
        if size not in _NOISE:
            n = np.random.default_rng(7).normal(0.0, 2.5, (size, size, 3))
            _NOISE[size] = (
                np.clip(n, 0, 255).astype(np.uint8),
                np.clip(-n, 0, 255).astype(np.uint8),
            )
        pos, neg = _NOISE[size]
        for _ in range(times):
            oy = int(rng.integers(0, size - self.h + 1))
            ox = int(rng.integers(0, size - self.w + 1))
            cv2.add(rgb, pos[oy : oy + self.h, ox : ox + self.w], dst=rgb)
            cv2.subtract(rgb, neg[oy : oy + self.h, ox : ox + self.w], dst=rgb)
