"""Detectable objects: cars, trucks, buses (boxes with wheels and windows), people, riders.

Each builder returns one Element whose every part carries the object's instance code, so the
label buffer holds the object's exact silhouette. Sizes are in metres; the camera does the
scaling by distance.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import (
    FRONT,
    LEFT,
    LINE,
    REAR,
    RIGHT,
    Builder,
    Element,
    Plane,
    box,
    heading,
    plane_sketch,
    scale,
)

# Car paints and how common each is (relative weight), side by side.
CAR_PAINTS = (
    ((230, 230, 228), 6),
    ((185, 188, 192), 6),
    ((120, 122, 128), 4),
    ((28, 28, 32), 6),
    ((150, 22, 28), 3),
    ((28, 58, 130), 3),
    ((24, 70, 48), 1),
    ((170, 150, 112), 1),
    ((84, 20, 26), 1),
    ((70, 100, 160), 2),
    ((210, 180, 40), 0.5),
)
CAR_COLOURS = tuple(rgb for rgb, _ in CAR_PAINTS)
CAR_CUM = np.cumsum([weight for _, weight in CAR_PAINTS])
BUS_COLOURS = ((228, 178, 22), (190, 30, 32), (235, 235, 235), (30, 88, 168), (38, 135, 70))
CARGO_COLOURS = ((236, 236, 236), (200, 202, 206), (220, 120, 30), (40, 80, 160), (170, 30, 30))
SKIN = ((238, 200, 170), (205, 160, 120), (160, 110, 75), (100, 68, 45))
HAIR = ((30, 24, 20), (70, 45, 25), (150, 110, 60), (190, 190, 185))
SHIRTS = (
    (200, 40, 40),
    (40, 80, 170),
    (235, 235, 230),
    (35, 35, 38),
    (40, 140, 70),
    (230, 190, 40),
    (120, 60, 140),
    (230, 120, 40),
    (120, 120, 125),
    (90, 150, 200),
)
TROUSERS = ((30, 40, 75), (28, 28, 30), (80, 80, 85), (150, 130, 95), (60, 50, 40))
TYRE = (22, 22, 24)
HUB = (130, 130, 135)
GLASS = (42, 52, 66)
GLASS_DAY = (70, 86, 104)
HEAD_DAY, HEAD_NIGHT = (220, 222, 215), (255, 250, 228)
TAIL_DAY, TAIL_NIGHT = (165, 20, 22), (255, 50, 36)


def pick(rng: np.random.Generator, options, cum=None):
    """One of options, uniformly or by cumulative weights (rng.choice is slow per call)."""
    if cum is None:
        return options[int(rng.integers(len(options)))]
    return options[
        min(int(np.searchsorted(cum, rng.random() * cum[-1], side="right")), len(options) - 1)
    ]


def vary(rng: np.random.Generator, rgb, amount=12.0):
    d = rng.uniform(-amount, amount)
    return (
        min(max(rgb[0] + d, 0.0), 255.0),
        min(max(rgb[1] + d, 0.0), 255.0),
        min(max(rgb[2] + d, 0.0), 255.0),
    )


def _lon_a(fid: int, t: float) -> float:
    """Face coordinate a of a point t of the way from rear to front, on a side face."""
    return t if fid == RIGHT else 1.0 - t


class Vehicles(Builder):
    """Vehicle builders sharing the camera height, lighting and random stream."""

    def __init__(self, rng: np.random.Generator, cam_y: float, env):
        super().__init__(rng, cam_y, env)
        self.glass = GLASS if env.night else GLASS_DAY
        self.footprint = (0.0, 0.0)  # length, width of the last vehicle built (for its shadow)

    def _lamps(self, f, fid, rects, radius):
        """Head lamps on a front face, tail lamps on a rear one; lit (emissive + halo) at
        night."""
        night = self.env.night
        day_col, glow = (HEAD_DAY, HEAD_NIGHT) if fid == FRONT else (TAIL_DAY, TAIL_NIGHT)
        col = glow if night else day_col
        for a0, a1, b0, b1 in rects:
            f.rect(a0, a1, b0, b1, col, emissive=night, light=(radius, glow) if night else None)

    def _wheels(self, f, fid, ts, r, length, h):
        for t in ts:
            a = _lon_a(fid, t)
            f.ellipse(a, r / h, r / length, r / h, TYRE)
            f.ellipse(a, r / h, 0.5 * r / length, 0.5 * r / h, HUB, n=8)

    def car(self, x, z, yaw, code) -> Element:
        rng = self.rng
        el = Element(math.hypot(x, z), code)
        style = pick(rng, (0, 0, 0, 0, 1, 1, 2, 2, 2, 3))  # sedan, hatch, suv, van
        lo, hi = ((4.3, 4.9), (3.8, 4.3), (4.4, 4.9), (4.6, 5.0))[style]
        length = rng.uniform(lo, hi)
        width = rng.uniform(1.72, 1.95)
        body_h = (0.82, 0.84, 1.0, 1.02)[style] + rng.uniform(-0.04, 0.04)
        roof = body_h + (0.56, 0.62, 0.76, 0.98)[style]
        cab_len = length * (0.5, 0.62, 0.66, 0.82)[style]
        shift = length * (-0.06, -0.17, -0.14, -0.08)[style]
        front_in, rear_in = ((0.5, 0.4), (0.45, 0.12), (0.4, 0.15), (0.3, 0.05))[style]
        colour = vary(rng, pick(rng, CAR_COLOURS, CAR_CUM), 8)
        (fx, fz), _ = heading(yaw)
        body = box(x, z, yaw, length, width, 0.0, body_h)
        cab = box(
            x + shift * fx,
            z + shift * fz,
            yaw,
            cab_len,
            width * 0.94,
            body_h,
            roof,
            front_in,
            rear_in,
            0.1,
        )
        r = rng.uniform(0.3, 0.35)
        self.footprint = (length, width)
        for fid, f in self.faces(el, body, colour):
            if fid in (LEFT, RIGHT):
                self._wheels(f, fid, (0.8 / length, 1 - 0.85 / length), r, length, body_h)
            elif fid in (FRONT, REAR):
                f.rect(0.03, 0.17, 0.0, 0.22, TYRE)
                f.rect(0.83, 0.97, 0.0, 0.22, TYRE)
                if fid == FRONT:
                    f.rect(0.3, 0.7, 0.35, 0.6, (30, 30, 32))
                    self._lamps(f, fid, ((0.05, 0.24, 0.6, 0.8), (0.76, 0.95, 0.6, 0.8)), 0.3)
                else:
                    f.rect(0.38, 0.62, 0.35, 0.55, (225, 225, 210))
                    self._lamps(f, fid, ((0.04, 0.2, 0.62, 0.85), (0.8, 0.96, 0.62, 0.85)), 0.18)
        for fid, f in self.faces(el, cab, colour):
            if fid in (LEFT, RIGHT):
                f.rect(0.07, 0.47, 0.1, 0.86, self.glass)
                f.rect(0.53, 0.93, 0.1, 0.86, self.glass)
            elif fid == FRONT:
                f.rect(0.06, 0.94, 0.08, 0.9, scale(self.glass, 1.15))
            elif fid == REAR:
                f.rect(0.1, 0.9, 0.15, 0.85, self.glass)
        return el

    def bus(self, x, z, yaw, code) -> Element:
        rng = self.rng
        el = Element(math.hypot(x, z), code)
        length, width, h = rng.uniform(10.5, 12.5), 2.5, rng.uniform(3.0, 3.25)
        colour = vary(rng, pick(rng, BUS_COLOURS), 10)
        self.footprint = (length, width)
        for fid, f in self.faces(el, box(x, z, yaw, length, width, 0.0, h), colour):
            if fid in (LEFT, RIGHT):
                k = 6
                a0 = 0.04 + np.arange(k) * (0.92 / k)
                f.rects(a0, a0 + 0.92 / k - 0.012, np.full(k, 0.52), np.full(k, 0.88), self.glass)
                f.rect(0.0, 1.0, 0.3, 0.36, scale(colour, 0.6))
                door = _lon_a(fid, 0.9)
                f.rect(door - 0.035, door + 0.035, 0.04, 0.86, self.glass)
                self._wheels(f, fid, (2.4 / length, 1 - 2.6 / length), 0.5, length, h)
            elif fid == FRONT:
                f.rect(0.05, 0.95, 0.42, 0.88, scale(self.glass, 1.15))
                board = (255, 170, 40) if self.env.night else (30, 30, 30)
                f.rect(0.15, 0.85, 0.9, 0.97, board, emissive=self.env.night)
                self._lamps(f, fid, ((0.05, 0.18, 0.1, 0.17), (0.82, 0.95, 0.1, 0.17)), 0.35)
            elif fid == REAR:
                f.rect(0.15, 0.85, 0.62, 0.86, self.glass)
                f.rect(0.25, 0.75, 0.1, 0.35, scale(colour, 0.55))
                self._lamps(f, fid, ((0.04, 0.12, 0.15, 0.32), (0.88, 0.96, 0.15, 0.32)), 0.2)
        return el

    def truck(self, x, z, yaw, code) -> Element:
        rng = self.rng
        el = Element(math.hypot(x, z), code)
        small = rng.random() < 0.35
        cab_l, cab_h = (1.9, rng.uniform(2.4, 2.6)) if small else (2.3, rng.uniform(2.9, 3.1))
        cargo_l = rng.uniform(3.5, 4.5) if small else rng.uniform(5.5, 8.0)
        cargo_h = rng.uniform(2.8, 3.2) if small else rng.uniform(3.5, 4.0)
        width = 2.2 if small else 2.5
        total = cab_l + 0.25 + cargo_l
        self.footprint = (total, width + 0.05)
        (fx, fz), _ = heading(yaw)
        cab_colour = vary(rng, pick(rng, CAR_COLOURS[:7] + BUS_COLOURS), 10)
        cargo_colour = vary(rng, pick(rng, CARGO_COLOURS), 8)
        parts = []
        for lon, ln, h, col, is_cab in (
            (total / 2 - cab_l / 2, cab_l, cab_h, cab_colour, True),
            (-total / 2 + cargo_l / 2, cargo_l, cargo_h, cargo_colour, False),
        ):
            px, pz = x + lon * fx, z + lon * fz
            parts.append((math.hypot(px, pz), px, pz, ln, h, col, is_cab))
        parts.sort(key=lambda p: -p[0])  # the far block first
        for _, px, pz, ln, h, col, is_cab in parts:
            corners = box(px, pz, yaw, ln, width if is_cab else width + 0.05, 0.0, h)
            for fid, f in self.faces(el, corners, col):
                self._truck_face(f, fid, ln, h, col, is_cab)
        return el

    def _truck_face(self, f, fid, length, h, colour, is_cab):
        if fid in (LEFT, RIGHT):
            f.rect(0.0, 1.0, 0.0, 0.16, (40, 40, 42))
            if is_cab:
                f.rect(_lon_a(fid, 0.45), _lon_a(fid, 0.92), 0.55, 0.85, self.glass)
                wheels = (0.5,)
            else:
                f.rect(0.05, 0.95, 0.45, 0.6, scale(colour, 0.7))
                wheels = (1.0 / length, 2.1 / length)
            self._wheels(f, fid, wheels, 0.5, length, h)
        elif fid == FRONT and is_cab:
            f.rect(0.07, 0.93, 0.55, 0.9, scale(self.glass, 1.15))
            f.rect(0.28, 0.72, 0.15, 0.45, (35, 35, 38))
            self._lamps(f, fid, ((0.04, 0.2, 0.15, 0.25), (0.8, 0.96, 0.15, 0.25)), 0.35)
        elif fid == REAR and not is_cab:
            f.rect(0.04, 0.49, 0.12, 0.96, scale(colour, 0.85))
            f.rect(0.51, 0.96, 0.12, 0.96, scale(colour, 0.85))
            f.rect(0.0, 1.0, 0.0, 0.1, (35, 35, 35))
            self._lamps(f, fid, ((0.03, 0.12, 0.03, 0.09), (0.88, 0.97, 0.03, 0.09)), 0.2)


def person_parts(f, rng: np.random.Generator, height: float, ride: float = 0.0) -> None:
    """Head, body and legs sketched on a billboard. `ride` > 0: seated at that hip height."""
    s = height / 1.75
    skin = vary(rng, pick(rng, SKIN), 6)
    shirt = vary(rng, pick(rng, SHIRTS), 15)
    legs = vary(rng, pick(rng, TROUSERS), 8)
    hip = ride if ride else 0.5 * height
    top = hip + 0.33 * height if ride else 0.82 * height
    if ride:
        for side in (-1, 1):
            f.segment(side * 0.08 * s, hip, side * 0.11 * s, 0.3, 0.13 * s, legs)
    else:
        stride = rng.uniform(-0.13, 0.13) * s
        for side in (-1, 1):
            foot = side * (0.07 * s + stride)
            f.segment(side * 0.07 * s, hip + 0.02, foot, 0.05, 0.13 * s, legs)
            f.rect(foot - 0.07 * s, foot + 0.07 * s, 0.0, 0.06, (25, 25, 25))
        if rng.random() < 0.15:  # skirt or coat
            coat = vary(rng, pick(rng, SHIRTS), 15)
            f.trapezoid(
                -0.2 * s, 0.2 * s, hip - 0.25 * height, hip + 0.02, -0.16 * s, 0.16 * s, coat
            )
    sleeve = shirt if rng.random() < 0.7 else skin
    swing = rng.uniform(0.0, 0.08) * s
    hand_b = hip + 0.08 * height if ride else hip + 0.02
    for side in (-1, 1):
        hand_a = side * (0.2 * s + (0.02 if ride else swing))
        f.segment(side * 0.19 * s, top - 0.04, hand_a, hand_b, 0.085 * s, sleeve)
    f.trapezoid(-0.16 * s, 0.16 * s, hip - 0.02, top, -0.2 * s, 0.2 * s, shirt)
    f.rect(-0.045 * s, 0.045 * s, top - 0.01, top + 0.05 * s, skin)
    cb = top + 0.13 * s
    f.ellipse(0.0, cb + 0.015 * s, 0.105 * s, 0.115 * s, pick(rng, HAIR))
    f.ellipse(0.0, cb - 0.01 * s, 0.09 * s, 0.1 * s, skin)


def person(rng, x, z, code, height=None) -> Element:
    el = Element(math.hypot(x, z), code)
    if height is None:
        height = rng.uniform(1.1, 1.3) if rng.random() < 0.1 else rng.uniform(1.55, 1.92)
    f = plane_sketch(el, Plane.facing_camera(x, z))
    person_parts(f, rng, height)
    f.done()
    return el


def bike(rng, env, x, z, yaw, code, motor: bool) -> Element:
    """Two wheels in the bike's own vertical plane, and a rider facing the camera."""
    el = Element(math.hypot(x, z), code)
    (fx, fz), _ = heading(yaw)
    f = plane_sketch(el, Plane((x, 0.0, z), (fx, fz)))
    if motor:
        r, half = 0.32, 0.7
        colour = vary(rng, pick(rng, CAR_COLOURS + BUS_COLOURS), 10)
        for a in (-half, half):
            f.ellipse(a, r, r, r, TYRE, n=12)
            f.ellipse(a, r, 0.45 * r, 0.45 * r, HUB, n=8)
        f.poly((-0.55, 0.5, 0.62, 0.15, -0.5), (0.42, 0.42, 0.85, 0.98, 0.86), colour)
        f.rect(-0.6, -0.05, 0.86, 0.95, (30, 30, 30))
        lamp = HEAD_NIGHT if env.night else HEAD_DAY
        f.rect(
            0.6,
            0.7,
            0.75,
            0.85,
            lamp,
            emissive=env.night,
            light=(0.3, HEAD_NIGHT) if env.night else None,
        )
        hip = 0.9
    else:
        r, half = 0.34, 0.52
        frame = vary(rng, pick(rng, SHIRTS + CAR_COLOURS), 10)
        for a in (-half, half):
            f.ring(a, r, r, r - 0.06, TYRE)
        f.poly(
            (-half, -0.05, 0.36, -0.18, -half, -0.05, -0.18, 0.36, half, 0.3),
            (r, 0.3, 0.92, 0.9, r, 0.3, 0.9, 0.92, r, 1.05),
            frame,
            kind=LINE,
            width=0.045,
        )
        hip = 0.95
    f.done()
    rider = plane_sketch(el, Plane.facing_camera(x, z))
    height = rng.uniform(1.6, 1.85)
    person_parts(rider, rng, height, ride=hip)
    if motor:  # a helmet over the head
        s, top = height / 1.75, hip + 0.33 * height
        rider.ellipse(
            0.0, top + 0.14 * s, 0.12 * s, 0.13 * s, vary(rng, pick(rng, CAR_COLOURS), 10)
        )
    rider.done()
    return el
