"""3D building blocks: drawable elements made of planar parts, boxes, faces and sketches.

Every part is a polygon in world coordinates; the canvas projects and fills it. Parts are
drawn in order, so an element lists its far parts first. Details are sketched in 2D on a
surface (a box face or a vertical plane) and mapped to 3D in one numpy call per surface:
the per-call overhead, not the arithmetic, is what costs time here.
"""

from __future__ import annotations

import math

import numpy as np

FILL, RING, LINE, MULTI = range(4)  # polygon, annulus (outer+inner), polyline, many polygons
REAR, RIGHT, FRONT, LEFT, TOP = range(5)

_CIRCLES = {
    n: (
        np.cos(np.linspace(0, 2 * np.pi, n, endpoint=False)).tolist(),
        np.sin(np.linspace(0, 2 * np.pi, n, endpoint=False)).tolist(),
    )
    for n in (6, 8, 10, 12, 16)
}
_NEXT = [1, 2, 3, 0]


class Element:
    """One thing in the scene, drawn as a whole in far-to-near order by `dist`."""

    __slots__ = ("dist", "code", "parts", "lights")

    def __init__(self, dist: float, code: int):
        self.dist = dist
        self.code = code  # segmentation class (stuff) or instance code (objects)
        self.parts: list[tuple] = []
        self.lights: list[tuple] = []  # (point (3,), radius m, rgb, ground pool?)

    def add(self, pts, rgb, code=None, emissive=False, kind=FILL, width=0.0, n=0):
        """`n`: vertices per polygon for MULTI/RING; `width`: metres for LINE."""
        self.parts.append((kind, pts, rgb, self.code if code is None else code, emissive, width, n))

    def light(self, point, radius, rgb, pool=False):
        self.lights.append((point, radius, rgb, pool))


def scale(rgb, k: float):
    return (rgb[0] * k, rgb[1] * k, rgb[2] * k)


def heading(yaw: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x, z) of the unit forward and right vectors of something turned by yaw (0 = +Z)."""
    s, c = math.sin(yaw), math.cos(yaw)
    return (s, c), (c, -s)


_LON = np.array([-1.0, -1.0, 1.0, 1.0])
_LAT = np.array([-1.0, 1.0, 1.0, -1.0])


def box(x, z, yaw, length, width, y0, y1, front_in=0.0, rear_in=0.0, narrow=0.0) -> np.ndarray:
    """(8,3) corners: bottom then top, each rear-left, rear-right, front-right, front-left.

    The top can be pulled in (front_in/rear_in along the length, narrow across) for cabins
    with sloped windscreens.
    """
    s, c = math.sin(yaw), math.cos(yaw)
    hl, hw = length / 2, width / 2
    lon = np.concatenate((_LON * hl, (-hl + rear_in, -hl + rear_in, hl - front_in, hl - front_in)))
    lat = np.concatenate((_LAT * hw, _LAT * (hw * (1.0 - narrow))))
    pts = np.empty((8, 3))
    pts[:, 0] = x + lon * s + lat * c
    pts[:4, 1] = y0
    pts[4:, 1] = y1
    pts[:, 2] = z + lon * c - lat * s
    return pts


def visible_faces(corners: np.ndarray, cam_y: float):
    """Faces of a box facing the camera: list of (face id, quad (4,3), unit outward normal).

    Side quads are ordered bottom-left, bottom-right, top-right, top-left as seen from outside
    (up to a mirror, which the symmetric details do not mind).
    """
    b, t = corners[:4], corners[4:]
    bn, tn = b[_NEXT], t[_NEXT]
    e, u = bn - b, t - b
    n = np.empty((4, 3))
    n[:, 0] = u[:, 1] * e[:, 2] - u[:, 2] * e[:, 1]
    n[:, 1] = u[:, 2] * e[:, 0] - u[:, 0] * e[:, 2]
    n[:, 2] = u[:, 0] * e[:, 1] - u[:, 1] * e[:, 0]
    mid = (b + bn + t + tn) * 0.25
    centre = corners.mean(0)
    n *= np.where(((mid - centre) * n).sum(1) < 0, -1.0, 1.0)[:, None]
    to_cam = -mid
    to_cam[:, 1] += cam_y
    n /= np.sqrt((n * n).sum(1))[:, None] + 1e-12
    out = [
        (i, np.array((b[i], bn[i], tn[i], t[i])), n[i])
        for i in np.flatnonzero((to_cam * n).sum(1) > 0).tolist()
    ]
    if cam_y > t[0, 1]:
        out.append((TOP, t.copy(), np.array([0.0, 1.0, 0.0])))
    return out


def bilinear(quad: np.ndarray):
    """Map face coordinates a (left->right), b (bottom->top) in [0,1] onto a quad."""

    def to3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        w = np.empty((len(a), 4))
        ia, ib = 1.0 - a, 1.0 - b
        w[:, 0] = ia * ib
        w[:, 1] = a * ib
        w[:, 2] = a * b
        w[:, 3] = ia * b
        return w @ quad

    return to3d


class Plane:
    """A vertical plane through `origin` spanned by the horizontal unit vector `u` and up."""

    def __init__(self, origin, u):
        self.origin = np.asarray(origin, dtype=np.float64)
        self.u = np.array((u[0], 0.0, u[-1]), dtype=np.float64)

    @classmethod
    def facing_camera(cls, x, z):
        """Billboard: perpendicular to the horizontal line of sight."""
        d = math.hypot(x, z) or 1.0
        return cls((x, 0.0, z), (z / d, -x / d))

    def to3d(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        p = self.origin + a[:, None] * self.u
        p[:, 1] += b
        return p


class Sketch:
    """Collects 2D polygons on a surface, then maps them all to 3D and adds them as parts."""

    def __init__(self, el: Element, to3d):
        self.el, self.to3d = el, to3d
        self.a: list[float] = []
        self.b: list[float] = []
        self.specs: list[tuple] = []

    def poly(self, a, b, rgb, code=None, emissive=False, kind=FILL, n=0, width=0.0, light=None):
        self.a.extend(a)
        self.b.extend(b)
        self.specs.append((kind, len(a), rgb, code, emissive, width, n, light))

    def rect(self, a0, a1, b0, b1, rgb, **kw):
        self.poly((a0, a1, a1, a0), (b0, b0, b1, b1), rgb, **kw)

    def trapezoid(self, a0, a1, b0, b1, a0_top, a1_top, rgb, **kw):
        self.poly((a0, a1, a1_top, a0_top), (b0, b0, b1, b1), rgb, **kw)

    def ellipse(self, ca, cb, ra, rb, rgb, n=10, **kw):
        c, s = _CIRCLES[n]
        self.poly([ca + ra * v for v in c], [cb + rb * v for v in s], rgb, **kw)

    def ring(self, ca, cb, r_out, r_in, rgb, n=12):
        c, s = _CIRCLES[n]
        a = [ca + r_out * v for v in c] + [ca + r_in * v for v in c]
        b = [cb + r_out * v for v in s] + [cb + r_in * v for v in s]
        self.poly(a, b, rgb, kind=RING, n=n)

    def segment(self, a0, b0, a1, b1, width, rgb, **kw):
        """A thick straight stroke as a quad."""
        da, db = a1 - a0, b1 - b0
        k = width / 2 / (math.hypot(da, db) or 1.0)
        na, nb = -db * k, da * k
        self.poly(
            (a0 + na, a1 + na, a1 - na, a0 - na), (b0 + nb, b1 + nb, b1 - nb, b0 - nb), rgb, **kw
        )

    def rects(self, a0, a1, b0, b1, rgb, **kw):
        """Many non-overlapping rectangles (arrays) as one MULTI part."""
        self.poly(
            np.stack((a0, a1, a1, a0), 1).ravel().tolist(),
            np.stack((b0, b0, b1, b1), 1).ravel().tolist(),
            rgb,
            kind=MULTI,
            n=4,
            **kw,
        )

    def done(self) -> None:
        if not self.specs:
            return
        pts = self.to3d(np.array(self.a), np.array(self.b))
        i = 0
        for kind, m, rgb, code, emissive, width, n, light in self.specs:
            part = pts[i : i + m]
            self.el.add(part, rgb, code, emissive, kind, width, n)
            if light is not None:
                self.el.light((part[0] + part[2]) * 0.5, light[0], light[1])
            i += m
        self.specs.clear()
        self.a.clear()
        self.b.clear()


def face_sketch(el: Element, quad: np.ndarray) -> Sketch:
    return Sketch(el, bilinear(quad))


def plane_sketch(el: Element, plane: Plane) -> Sketch:
    return Sketch(el, plane.to3d)


class Builder:
    """What the object and scenery builders share: the random stream, the camera height (which
    faces it sees) and the environment (how a face is lit)."""

    def __init__(self, rng: np.random.Generator, cam_y: float, env):
        self.rng, self.cam_y, self.env = rng, cam_y, env

    def solid(self, el: Element, corners: np.ndarray, rgb, shade: float = 1.0) -> None:
        """The faces of box `corners` the camera sees, added to `el` in `rgb`, lit."""
        for _, quad, n in visible_faces(corners, self.cam_y):
            el.add(quad, scale(rgb, self.env.face(n) * shade))

    def faces(self, el: Element, corners: np.ndarray, rgb, top: bool = True):
        """As `solid`, yielding (face id, a sketch on the face) for each face's details; the
        sketch is drawn when the loop moves on. `top=False` leaves the top face out."""
        for fid, quad, n in visible_faces(corners, self.cam_y):
            if fid == TOP and not top:
                continue
            el.add(quad, scale(rgb, self.env.face(n)))
            f = face_sketch(el, quad)
            yield fid, f
            f.done()
