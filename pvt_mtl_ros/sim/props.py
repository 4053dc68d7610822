"""Scenery ("stuff"): buildings, houses, trees, poles, lamps, signs, traffic lights, fences."""

from __future__ import annotations

import math

import numpy as np

from .classes import BUILDING, FENCE, POLE, SIGN, TREE
from .geometry import (
    LEFT,
    LINE,
    MULTI,
    RIGHT,
    TOP,
    Builder,
    Element,
    Plane,
    box,
    heading,
    plane_sketch,
    scale,
)
from .objects import pick, vary

CITY_WALLS = (
    (168, 168, 165),
    (196, 182, 156),
    (150, 82, 62),
    (112, 64, 52),
    (96, 120, 148),
    (212, 210, 204),
    (130, 128, 124),
)
HOUSE_WALLS = (
    (226, 214, 184),
    (204, 184, 152),
    (176, 194, 204),
    (214, 204, 204),
    (160, 92, 70),
    (236, 236, 230),
    (190, 200, 170),
)
ROOFS = ((112, 44, 36), (72, 62, 58), (60, 66, 78), (140, 80, 50))
LEAVES = ((62, 102, 44), (78, 118, 50), (50, 88, 46), (96, 122, 52), (58, 96, 60))
TRUNK = (88, 66, 46)
POLE_GREY = (118, 120, 124)
LAMP_LIGHT = (255, 214, 150)
WINDOW_LIT = (255, 214, 140)


class Props(Builder):
    def _windows(self, f, width, height, floor_h, spacing, first_floor, lit_p):
        """A grid of windows on a face, as one or two MULTI parts (unlit, lit)."""
        rng = self.rng
        floors = int((height - 0.6) / floor_h)
        cols = max(1, int(width / spacing))
        if floors <= first_floor:
            return
        i, j = np.meshgrid(np.arange(first_floor, floors), np.arange(cols), indexing="ij")
        i, j = i.ravel(), j.ravel()
        a0, a1 = (j + 0.22) / cols, (j + 0.78) / cols
        b0, b1 = (i * floor_h + floor_h * 0.3) / height, (i * floor_h + floor_h * 0.82) / height
        glass = vary(rng, (70, 86, 106), 18)
        if not self.env.night:
            f.rects(a0, a1, b0, b1, glass)
            return
        lit = rng.random(len(i)) < lit_p
        if (~lit).any():
            f.rects(a0[~lit], a1[~lit], b0[~lit], b1[~lit], glass)
        if lit.any():
            f.rects(
                a0[lit],
                a1[lit],
                b0[lit],
                b1[lit],
                scale(WINDOW_LIT, rng.uniform(0.75, 1.0)),
                emissive=True,
            )

    def building(self, x, z, yaw, length, depth, height, shop=False) -> Element:
        """A block: the faces towards the camera, window grids, optional shop front."""
        rng = self.rng
        el = Element(math.hypot(x, z), BUILDING)
        wall = vary(rng, pick(rng, CITY_WALLS), 12)
        floor_h, spacing = rng.uniform(3.0, 3.6), rng.uniform(2.4, 3.8)
        lit_p = rng.uniform(0.2, 0.6)
        for fid, f in self.faces(el, box(x, z, yaw, length, depth, 0.0, height), wall):
            if fid == TOP:
                continue
            w = length if fid in (LEFT, RIGHT) else depth
            self._windows(f, w, height, floor_h, spacing, 1 if shop else 0, lit_p)
            if shop:
                glass = (255, 220, 160) if self.env.night else (50, 60, 70)
                f.rect(0.02, 0.98, 0.02, 2.6 / height, glass, emissive=self.env.night)
                f.rect(0.0, 1.0, 2.7 / height, 3.0 / height, scale(wall, 0.6))
        return el

    def house(self, x, z, yaw, length, depth) -> Element:
        """Walls with windows and a door under a gable roof whose ridge runs along `yaw`."""
        rng = self.rng
        el = Element(math.hypot(x, z), BUILDING)
        wall = vary(rng, pick(rng, HOUSE_WALLS), 10)
        roof = vary(rng, pick(rng, ROOFS), 10)
        storeys = 1 if rng.random() < 0.35 else 2
        wall_h = storeys * rng.uniform(2.7, 3.1)
        roof_h = rng.uniform(1.8, 3.2)
        corners = box(x, z, yaw, length, depth, 0.0, wall_h)
        for fid, f in self.faces(el, corners, wall, top=False):  # the roof covers the top
            w = length if fid in (LEFT, RIGHT) else depth
            cols = max(1, int(w / 3.2))
            a0 = (np.arange(cols) + 0.3) / cols
            for k in range(storeys):
                b0 = (k * wall_h / storeys + 0.9) / wall_h
                b1 = (k * wall_h / storeys + 2.2) / wall_h
                lit = self.env.night and rng.random() < 0.5
                col = WINDOW_LIT if lit else (60, 74, 92)
                f.rects(
                    a0, a0 + 0.4 / cols, np.full(cols, b0), np.full(cols, b1), col, emissive=lit
                )
            if fid in (LEFT, RIGHT):
                door = rng.uniform(0.1, 0.9) / cols
                f.rect(door, door + 1.0 / w, 0.0, 2.1 / wall_h, (90, 60, 40))
        self._roof(el, x, z, yaw, length, depth, wall_h, roof_h, roof, wall)
        return el

    def _roof(self, el, x, z, yaw, length, depth, wall_h, roof_h, roof, wall):
        """Two slopes and two gables; the faces towards the camera, far ones first."""
        (fx, fz), (rx, rz) = heading(yaw)
        hl, hd = length / 2 + 0.3, depth / 2 + 0.4
        pts = np.array(
            [
                [x - hl * fx - hd * rx, wall_h - 0.2, z - hl * fz - hd * rz],
                [x - hl * fx + hd * rx, wall_h - 0.2, z - hl * fz + hd * rz],
                [x + hl * fx + hd * rx, wall_h - 0.2, z + hl * fz + hd * rz],
                [x + hl * fx - hd * rx, wall_h - 0.2, z + hl * fz - hd * rz],
                [x - hl * fx, wall_h + roof_h, z - hl * fz],
                [x + hl * fx, wall_h + roof_h, z + hl * fz],
            ]
        )
        faces = (((0, 3, 5, 4), roof), ((1, 2, 5, 4), roof), ((0, 1, 4), wall), ((3, 2, 5), wall))
        centre = np.array([x, wall_h, z])
        cam = np.array([0.0, self.cam_y, 0.0])
        shown = []
        for idx, col in faces:
            p = pts[list(idx)]
            n = np.cross(p[1] - p[0], p[-1] - p[0])
            mid = p.mean(0)
            if np.dot(n, mid - centre) < 0:
                n = -n
            facing = np.dot(n, cam - mid)
            if facing > 0:
                shown.append((facing / np.linalg.norm(n), p, col, n / np.linalg.norm(n)))
        shown.sort(key=lambda t: t[0])
        for _, p, col, n in shown:
            el.add(p, scale(col, self.env.face(n)))

    def tree(self, x, z, height=None, conifer=False) -> Element:
        rng = self.rng
        el = Element(math.hypot(x, z), TREE)
        f = plane_sketch(el, Plane.facing_camera(x, z))
        height = height or rng.uniform(5.0, 10.0)
        leaves = vary(rng, pick(rng, LEAVES), 10)
        trunk_w = 0.06 * height
        if conifer:
            f.rect(-trunk_w / 2, trunk_w / 2, 0.0, 0.3 * height, TRUNK)
            w = rng.uniform(0.25, 0.35) * height
            for k in range(3):
                b0 = 0.2 * height + k * 0.25 * height
                wk = w * (1 - 0.25 * k)
                f.poly((-wk, wk, 0.0), (b0, b0, b0 + 0.45 * height), scale(leaves, 0.85 + 0.08 * k))
        else:
            f.trapezoid(
                -trunk_w / 2, trunk_w / 2, 0.0, 0.55 * height, -trunk_w / 3, trunk_w / 3, TRUNK
            )
            r = rng.uniform(0.22, 0.32) * height
            cb = height - r
            for _ in range(int(rng.integers(3, 6))):
                ca = rng.uniform(-0.5, 0.5) * r
                cbk = cb + rng.uniform(-0.35, 0.25) * r
                rk = r * rng.uniform(0.6, 0.85)
                shade = scale(leaves, rng.uniform(0.8, 1.1))
                f.ellipse(ca, cbk, rk, rk * rng.uniform(0.8, 1.0), shade, n=12)
        f.done()
        return el

    def hedge(self, x, z, yaw, length, height) -> Element:
        el = Element(math.hypot(x, z), TREE)
        leaves = vary(self.rng, pick(self.rng, LEAVES), 8)
        self.solid(el, box(x, z, yaw, length, 0.8, 0.0, height), leaves, shade=0.9)
        return el

    def lamp(self, x, z, height=None, reach=None) -> Element:
        """A street lamp whose arm reaches `reach` metres along X (towards the road)."""
        rng = self.rng
        el = Element(math.hypot(x, z), POLE)
        height = height or rng.uniform(7.0, 10.0)
        reach = -math.copysign(rng.uniform(1.2, 2.2), x) if reach is None else reach
        f = plane_sketch(el, Plane.facing_camera(x, z))
        f.trapezoid(-0.11, 0.11, 0.0, height, -0.07, 0.07, POLE_GREY)
        f.done()
        arm = np.array(
            [
                [x, height - 0.1, z],
                [x + reach * 0.6, height + 0.25, z],
                [x + reach, height + 0.2, z],
            ]
        )
        el.add(arm, POLE_GREY, kind=LINE, width=0.08)
        head = plane_sketch(el, Plane((x + reach, 0.0, z - 0.15), (1.0, 0.0)))
        if self.env.night:
            head.rect(
                -0.35,
                0.3,
                height + 0.05,
                height + 0.22,
                LAMP_LIGHT,
                emissive=True,
                light=(0.45, (255, 200, 120)),
            )
            el.light(np.array([x + reach, 0.0, z]), rng.uniform(3.5, 5.0), (30, 24, 14), pool=True)
        else:
            head.rect(-0.35, 0.3, height + 0.05, height + 0.22, (90, 92, 96))
        head.done()
        return el

    def pole(self, x, z, height, width=0.15, colour=POLE_GREY) -> Element:
        el = Element(math.hypot(x, z), POLE)
        f = plane_sketch(el, Plane.facing_camera(x, z))
        f.rect(-width / 2, width / 2, 0.0, height, colour)
        f.done()
        return el

    def sign(self, x, z) -> Element:
        """A post with a plate facing the oncoming traffic (-Z)."""
        rng = self.rng
        el = Element(math.hypot(x, z), POLE)
        h = rng.uniform(2.1, 2.7)
        post = plane_sketch(el, Plane.facing_camera(x, z))
        post.rect(-0.04, 0.04, 0.0, h, POLE_GREY)
        post.done()
        f = plane_sketch(el, Plane((x, 0.0, z - 0.05), (1.0, 0.0)))
        kind = int(rng.integers(5))
        c = h + 0.3
        red, white, blue = (200, 30, 30), (235, 235, 235), (30, 70, 170)
        if kind == 0:  # round prohibition / speed limit
            f.ellipse(0.0, c, 0.35, 0.35, red, n=16, code=SIGN)
            f.ellipse(0.0, c, 0.27, 0.27, white, n=16, code=SIGN)
        elif kind == 1:  # warning triangle
            f.poly((-0.4, 0.4, 0.0), (c - 0.3, c - 0.3, c + 0.4), red, code=SIGN)
            f.poly((-0.27, 0.27, 0.0), (c - 0.22, c - 0.22, c + 0.24), white, code=SIGN)
        elif kind == 2:  # blue mandatory / information square
            f.rect(-0.32, 0.32, c - 0.32, c + 0.32, blue, code=SIGN)
            f.poly((-0.15, 0.15, 0.0), (c - 0.15, c - 0.15, c + 0.18), white, code=SIGN)
        elif kind == 3:  # stop
            f.ellipse(0.0, c, 0.38, 0.38, red, n=8, code=SIGN)
            f.rect(-0.25, 0.25, c - 0.06, c + 0.06, white, code=SIGN)
        else:  # street name / direction board
            col = (30, 110, 60) if rng.random() < 0.5 else blue
            f.rect(-0.6, 0.6, c - 0.2, c + 0.2, col, code=SIGN)
            f.rect(-0.45, 0.45, c - 0.05, c + 0.05, white, code=SIGN)
        f.done()
        return el

    def traffic_light(self, x, z, arm=0.0) -> Element:
        """Pole, optional mast arm over the road (metres along X), and a three-lamp head."""
        rng = self.rng
        el = Element(math.hypot(x, z), POLE)
        h = 5.6 if arm else rng.uniform(3.0, 3.6)
        post = plane_sketch(el, Plane.facing_camera(x, z))
        post.rect(-0.09, 0.09, 0.0, h + (0.2 if arm else 0), (60, 62, 64))
        post.done()
        hx = x + arm
        if arm:
            el.add(np.array([[x, h, z], [hx, h, z]]), (60, 62, 64), kind=LINE, width=0.12)
        f = plane_sketch(el, Plane((hx, 0.0, z - 0.12), (1.0, 0.0)))
        top = h if arm else h + 0.9
        f.rect(-0.2, 0.2, top - 1.05, top, (28, 28, 30), code=SIGN)
        state = int(rng.integers(3))
        lit = ((255, 40, 30), (255, 170, 0), (40, 255, 130))
        for k in range(3):
            on = k == state
            col = lit[k] if on else (50, 50, 46)
            light = (0.3, lit[k]) if on else None
            f.ellipse(
                0.0, top - 0.18 - 0.33 * k, 0.12, 0.12, col, code=SIGN, emissive=on, light=light
            )
        f.done()
        return el

    def gantry(self, x_left, x_right, z) -> Element:
        """Overhead highway sign bridge: two posts, a beam, green boards."""
        rng = self.rng
        el = Element(z, POLE)
        h = rng.uniform(5.5, 6.5)
        steel = (140, 142, 146)
        for xp in (x_left, x_right):
            post = plane_sketch(el, Plane.facing_camera(xp, z))
            post.rect(-0.2, 0.2, 0.0, h + 1.8, steel)
            post.done()
        f = plane_sketch(el, Plane((0.0, 0.0, z), (1.0, 0.0)))
        f.rect(x_left, x_right, h + 1.3, h + 1.6, steel)
        f.done()
        boards = int(rng.integers(1, 4))
        span = (x_right - x_left) / boards
        green = (30, 110, 60) if rng.random() < 0.8 else (30, 70, 170)
        f = plane_sketch(el, Plane((0.0, 0.0, z - 0.2), (1.0, 0.0)))
        white = (235, 235, 235)
        for k in range(boards):
            a0 = x_left + k * span + 0.5
            a1 = a0 + span * rng.uniform(0.55, 0.85)
            f.rect(a0, a1, h, h + rng.uniform(1.6, 2.2), green, code=SIGN)
            f.rect(a0 + 0.3, a1 - 0.3, h + 0.9, h + 1.2, white, code=SIGN)
            f.rect(a0 + 0.3, a0 + (a1 - a0) * 0.5, h + 0.4, h + 0.65, white, code=SIGN)
        f.done()
        return el

    def barrier(self, x, z, yaw, length) -> Element:
        """Concrete median barrier section."""
        el = Element(math.hypot(x, z), FENCE)
        self.solid(el, box(x, z, yaw, length, 0.6, 0.0, 0.85, narrow=0.6), (178, 176, 170))
        return el

    def rail(self, x, z, yaw, length, height=0.8, colour=(165, 168, 172), posts=2.0) -> Element:
        """Guard rail / railing section: a band on posts, the ground visible between posts."""
        el = Element(math.hypot(x, z), FENCE)
        fwd, _ = heading(yaw)
        f = plane_sketch(el, Plane((x, 0.0, z), fwd))
        k = max(1, int(length / posts))
        a = -length / 2 + (np.arange(k) + 0.5) * length / k
        f.rects(a - 0.06, a + 0.06, np.zeros(k), np.full(k, height), scale(colour, 0.6))
        f.rect(-length / 2, length / 2, height - 0.32, height, colour)
        f.done()
        return el

    def fence(self, x, z, yaw, length, height, colour) -> Element:
        """Solid garden fence section with a darker top rail."""
        el = Element(math.hypot(x, z), FENCE)
        fwd, _ = heading(yaw)
        f = plane_sketch(el, Plane((x, 0.0, z), fwd))
        f.rect(-length / 2, length / 2, 0.0, height, colour)
        f.rect(-length / 2, length / 2, height - 0.12, height, scale(colour, 0.7))
        f.done()
        return el

    def skyline(self, x0, x1, z, max_h) -> Element:
        """Far buildings as flat silhouettes facing the camera (they fade into the haze)."""
        rng = self.rng
        el = Element(math.hypot(0.5 * (x0 + x1), z), BUILDING)
        x = x0
        while x < x1:
            w = rng.uniform(10, 35)
            f = plane_sketch(el, Plane((0.0, 0.0, z + rng.uniform(-30, 30)), (1.0, 0.0)))
            f.rect(x, x + w, 0.0, rng.uniform(0.25, 1.0) * max_h, vary(rng, (150, 150, 152), 25))
            f.done()
            x += w * rng.uniform(0.6, 1.0)
        return el

    def treeline(self, x0, x1, z, height) -> Element:
        """A far row of tree crowns."""
        rng = self.rng
        el = Element(math.hypot(0.5 * (x0 + x1), z), TREE)
        f = plane_sketch(el, Plane((0.0, 0.0, z), (1.0, 0.0)))
        col = vary(rng, (60, 92, 52), 8)
        f.rect(x0, x1, 0.0, 0.5 * height, col)
        n = max(2, int((x1 - x0) / (0.7 * height)))
        c, s = (
            np.cos(np.linspace(0, 2 * np.pi, 10, endpoint=False)),
            np.sin(np.linspace(0, 2 * np.pi, 10, endpoint=False)),
        )
        xc = np.linspace(x0, x1, n)
        yc = rng.uniform(0.4, 0.7, n) * height
        ry = rng.uniform(0.4, 0.7, n) * height
        a = (xc[:, None] + 0.5 * height * c).ravel()
        b = yc[:, None] + ry[:, None] * s
        for half in (slice(0, None, 2), slice(1, None, 2)):  # MULTI fills even-odd: no overlaps
            rows = np.arange(n)[half]
            f.poly(
                a.reshape(n, 10)[rows].ravel().tolist(),
                b[rows].ravel().tolist(),
                col,
                kind=MULTI,
                n=10,
            )
        f.done()
        return el
