"""The scene under construction: road geometry, ground painting, props and object placement."""

from __future__ import annotations

import math

import numpy as np

from .canvas import FIRST_INSTANCE, MAX_INSTANCES, Canvas
from .classes import DETECTION_CLASSES, ROAD
from .geometry import Element, box
from .objects import Vehicles, bike, person
from .props import Props

# Half footprint (across, along) in metres, used to keep objects apart.
FOOTPRINT = {
    "car": (1.0, 2.55),
    "truck": (1.3, 5.5),
    "bus": (1.3, 6.3),
    "person": (0.3, 0.3),
    "bicycle": (0.35, 0.9),
    "motorcycle": (0.4, 1.1),
}


class Road:
    """Road centre line x(z) = x0 + slope*z + curv*z^2/2; `s` is the lateral offset from it."""

    def __init__(self, x0: float, slope: float = 0.0, curv: float = 0.0):
        self.x0, self.slope, self.curv = x0, slope, curv

    def x(self, s, z):
        return self.x0 + s + self.slope * z + 0.5 * self.curv * z * z

    def yaw(self, z: float) -> float:
        return math.atan(self.slope + self.curv * z)


class World:
    def __init__(self, canvas: Canvas, rng: np.random.Generator, env, n_objects: int | None):
        self.canvas, self.rng, self.env = canvas, rng, env
        self.cam = canvas.cam
        self.road = Road(0.0)
        self.vehicles = Vehicles(rng, self.cam.cam_height, env)
        self.props = Props(rng, self.cam.cam_height, env)
        self.n_objects = n_objects  # None: the scene's own default
        self.backdrop: list[Element] = []  # drawn first: facades and far scenery
        self.elements: list[Element] = []  # everything in front of the facades
        self.labels: list[int] = []  # detection class of instance k (code FIRST_INSTANCE + k)
        self.distances: list[float] = []  # its distance from the camera, metres
        self.taken: list[tuple[float, float, float, float]] = [(-1.3, 1.3, -6.0, 3.0)]  # ego car
        self.headlights = False

    def target(self, default: tuple[int, int]) -> int:
        lo, hi = default if self.n_objects is None else (self.n_objects, self.n_objects)
        return int(self.rng.integers(lo, hi + 1))

    # -- ground -----------------------------------------------------------------------------
    def start(self, ground_rgb, ground_code: int) -> None:
        self.canvas.sky_and_ground(ground_rgb, ground_code, self.rng)

    def band(self, s0, s1, z0, z1, rgb, code) -> None:
        """A strip of ground between lateral offsets s0..s1 along the road."""
        z0 = max(z0, 0.3)
        if z1 <= z0:
            return
        k = 2 if self.road.curv == 0 else 16
        zs = np.geomspace(z0, z1, k)
        left = np.stack((self.road.x(s0, zs), np.zeros(k), zs), 1)
        right = np.stack((self.road.x(s1, zs), np.zeros(k), zs), 1)
        self.canvas.ground(np.concatenate((left, right[::-1])), rgb, code)

    def patch(self, x0, x1, z0, z1, rgb, code) -> None:
        """An axis-aligned ground rectangle in world coordinates."""
        z0 = max(z0, 0.3)
        pts = np.array([[x0, 0, z0], [x1, 0, z0], [x1, 0, z1], [x0, 0, z1]], np.float64)
        self.canvas.ground(pts, rgb, code)

    def marks(self, s0, s1, z0, z1, rgb, code=ROAD) -> None:
        """Many small ground quads at once (arrays of equal length; must not overlap)."""
        s0, s1, z0, z1 = (np.atleast_1d(np.asarray(v, np.float64)) for v in (s0, s1, z0, z1))
        z0 = np.maximum(z0, 0.3)
        keep = z1 > z0
        if not keep.any():
            return
        s0, s1, z0, z1 = s0[keep], s1[keep], z0[keep], z1[keep]
        s = np.stack((s0, s1, s1, s0), 1).ravel()
        z = np.stack((z0, z0, z1, z1), 1).ravel()
        pts = np.stack((self.road.x(s, z), np.zeros_like(z), z), 1)
        self.canvas.ground(pts, rgb, code, n=4)

    def dashes(self, s, z0, z1, dash, gap, width, rgb) -> None:
        start = z0 + self.rng.uniform(0, dash + gap)
        zs = np.arange(start, z1, dash + gap)
        zs = zs[zs > 0.5]
        n = len(zs)
        if n:
            self.marks(np.full(n, s - width / 2), np.full(n, s + width / 2), zs, zs + dash, rgb)

    def line(self, s, z0, z1, width, rgb) -> None:
        self.band(s - width / 2, s + width / 2, z0, z1, rgb, ROAD)

    # -- props ------------------------------------------------------------------------------
    def along(self, s, z0, z1, seg, make) -> None:
        """Long roadside things (barriers, rails, fences) cut into sections for depth sorting."""
        z = max(z0, 0.5)
        while z < z1:
            length = min(seg * (1.0 + z / 40.0), z1 - z)
            zc = z + length / 2
            self.elements.append(make(self.road.x(s, zc), zc, self.road.yaw(zc), length))
            z += length

    def prop(self, el: Element, x: float, z: float, radius: float = 0.3) -> None:
        self.elements.append(el)
        self.taken.append((x - radius, x + radius, z - radius, z + radius))

    def at(self, s, z) -> tuple[float, float]:
        return float(self.road.x(s, z)), float(z)

    # -- objects ----------------------------------------------------------------------------
    def free(self, x, z, yaw, kind) -> bool:
        """Reserve the footprint if nothing is there yet."""
        across, along = FOOTPRINT[kind]
        c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
        hx, hz = across * c + along * s, along * c + across * s
        box = (x - hx, x + hx, z - hz, z + hz)
        for x0, x1, z0, z1 in self.taken:
            if box[0] < x1 and x0 < box[1] and box[2] < z1 and z0 < box[3]:
                return False
        self.taken.append(box)
        return True

    def object(self, kind: str, s: float, z: float, yaw: float | None = None) -> bool:
        """Place an object at road offset s, distance z; yaw defaults to along the road."""
        if len(self.labels) >= MAX_INSTANCES or z < 2.0:
            return False
        x = float(self.road.x(s, z))
        yaw = self.road.yaw(z) if yaw is None else yaw
        if not self.free(x, z, yaw, kind):
            return False
        label = DETECTION_CLASSES.index(kind)
        code = self.canvas_code(label)
        rng = self.rng
        if kind in ("car", "bus", "truck"):
            el = getattr(self.vehicles, kind)(x, z, yaw, code)
            self._shadow(x, z, yaw)
        elif kind == "person":
            el = person(rng, x, z, code)
        else:
            el = bike(rng, self.env, x, z, yaw, code, motor=kind == "motorcycle")
        self.elements.append(el)
        self.distances.append(el.dist)
        return True

    def _shadow(self, x: float, z: float, yaw: float) -> None:
        """A dark patch on the road under a vehicle: it grounds the object (drawn as ground)."""
        env = self.env
        sunny = not env.night and env.weather == "clear"
        length, width = self.vehicles.footprint
        if sunny:  # cast away from the sun
            x, z = x - 0.5 * env.sun[0], z - 0.5 * env.sun[1]
        corners = box(x, z, yaw, length + 0.3, width + 0.35, 0.0, 0.0)[:4]
        self.canvas.ground(corners, (38, 38, 42) if sunny else (58, 58, 62), ROAD)

    def canvas_code(self, label: int) -> int:
        self.labels.append(label)
        return FIRST_INSTANCE + len(self.labels) - 1

    def place(self, count: int, sample, tries: int = 6) -> int:
        """Call sample() -> (kind, s, z, yaw) until `count` objects are placed or tries run out."""
        placed = 0
        for _ in range(count * tries):
            if placed >= count:
                break
            kind, s, z, yaw = sample()
            placed += self.object(kind, s, z, yaw)
        return placed

    def choose(self, options: dict[str, float]) -> str:
        names = list(options)
        p = np.array([options[k] for k in names], np.float64)
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]
