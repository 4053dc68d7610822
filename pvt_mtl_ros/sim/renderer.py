"""render(seed, cfg) -> SimFrame: one driving scene with exact ground truth."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .atmosphere import make_environment
from .camera import Camera
from .canvas import FIRST_INSTANCE, Canvas
from .classes import DETECTION_TO_SEG, SCENE_TYPES, TIMES_OF_DAY, WEATHERS, scene_label
from .scenes import BUILDERS
from .world import World


@dataclass
class SimConfig:
    width: int = 640
    height: int = 480
    scene: str | None = None  # one of SCENE_TYPES; None: uniform
    time_of_day: str | None = None  # "day" | "night"; None: night with night_prob
    weather: str | None = None  # "clear" | "rain" | "fog"; None: by weather_probs
    camera_height: float | None = None  # metres; None: from camera_height_range
    pitch: float | None = None  # degrees, positive looks down; None: from pitch_range
    hfov: float | None = None  # horizontal field of view, degrees; None: from hfov_range
    n_objects: tuple[int, int] | None = None  # objects to place; None: the scene's default
    night_prob: float = 0.35
    weather_probs: tuple[float, float, float] = (0.7, 0.15, 0.15)
    camera_height_range: tuple[float, float] = (1.2, 2.0)
    pitch_range: tuple[float, float] = (-2.0, 4.0)
    hfov_range: tuple[float, float] = (55.0, 75.0)
    # Box rules: objects hidden to less than this fraction of their in-image silhouette, or
    # smaller than this, get no box (their pixels stay in the mask).
    min_visible_fraction: float = 0.3
    min_box_side: int = 4  # pixels
    min_box_pixels: int = 25
    max_fog: float = 0.85  # objects fogged beyond this opacity are not visible enough for a box


@dataclass
class SimFrame:
    image: np.ndarray  # uint8 HxWx3 RGB
    boxes: np.ndarray  # float32 [N,4] XYXY pixels, tight around the visible pixels
    labels: np.ndarray  # int64 [N] index into DETECTION_CLASSES
    mask: np.ndarray  # uint8 HxW, index into SEG_CLASSES
    scene: str
    time_of_day: str
    weather: str
    scene_label: int  # index into SCENE_CLASSES
    instance_mask: np.ndarray  # uint8 HxW: 0 none, k = k-th placed object (1-based)
    instance_ids: np.ndarray  # int64 [N]: the instance_mask value of each box
    visible_fraction: np.ndarray  # float32 [N]
    camera: dict = field(default_factory=dict)  # height (m), pitch (deg), hfov (deg), f (px)


def _pick(rng: np.random.Generator, value, options, p=None):
    if value is not None:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {options}")
        return value
    return options[int(rng.choice(len(options), p=p))]


def render(seed: int, cfg: SimConfig | None = None) -> SimFrame:
    """Deterministic in (seed, cfg)."""
    cfg = cfg or SimConfig()
    rng = np.random.default_rng(seed)
    scene = _pick(rng, cfg.scene, SCENE_TYPES)
    tod = cfg.time_of_day or ("night" if rng.random() < cfg.night_prob else "day")
    tod = _pick(rng, tod, TIMES_OF_DAY)
    weather = _pick(
        rng, cfg.weather, WEATHERS, np.asarray(cfg.weather_probs) / sum(cfg.weather_probs)
    )
    cam_h = (
        cfg.camera_height
        if cfg.camera_height is not None
        else rng.uniform(*cfg.camera_height_range)
    )
    pitch = cfg.pitch if cfg.pitch is not None else rng.uniform(*cfg.pitch_range)
    hfov = cfg.hfov if cfg.hfov is not None else rng.uniform(*cfg.hfov_range)
    cam = Camera(cfg.width, cfg.height, hfov, cam_h, math.radians(pitch))
    env = make_environment(rng, tod == "night", weather)
    canvas = Canvas(cam, env)
    n = None if cfg.n_objects is None else int(rng.integers(cfg.n_objects[0], cfg.n_objects[1] + 1))
    world = World(canvas, rng, env, n)
    BUILDERS[scene](world)
    canvas.fog_ground()
    canvas.draw(world.backdrop)
    canvas.draw(world.elements)
    image, code = canvas.finish(rng, headlights=env.night)
    seen = [env.fog_alpha(d) <= cfg.max_fog for d in world.distances]
    boxes, labels, ids, frac = _boxes(code, canvas, world.labels, seen, cfg)
    n_inst = len(world.labels)
    seg = np.arange(256, dtype=np.uint8)
    inst = np.zeros(256, np.uint8)
    seg[FIRST_INSTANCE : FIRST_INSTANCE + n_inst] = [DETECTION_TO_SEG[k] for k in world.labels]
    inst[FIRST_INSTANCE : FIRST_INSTANCE + n_inst] = np.arange(1, n_inst + 1)
    return SimFrame(
        image=image,
        boxes=boxes,
        labels=labels,
        mask=cv2.LUT(code, seg),
        scene=scene,
        time_of_day=tod,
        weather=weather,
        scene_label=scene_label(scene, tod),
        instance_mask=cv2.LUT(code, inst),
        instance_ids=ids,
        visible_fraction=frac,
        camera={"height": cam_h, "pitch": pitch, "hfov": hfov, "f": cam.f},
    )


def _boxes(code: np.ndarray, canvas: Canvas, labels: list[int], seen: list[bool], cfg: SimConfig):
    """Boxes from the final label buffer: visible-area rule, then tight around visible pixels."""
    counts = cv2.calcHist([code], [0], None, [256], [0, 256]).ravel()
    full_area = canvas.full_area
    out_boxes, out_labels, out_ids, out_frac = [], [], [], []
    for k, label in enumerate(labels):
        if not seen[k]:
            continue
        c = FIRST_INSTANCE + k
        visible, full = int(counts[c]), full_area.get(c, 0)
        if visible < max(cfg.min_box_pixels, 1) or visible < cfg.min_visible_fraction * full:
            continue
        x0, y0, x1, y1 = _extent(code, c, canvas.extent[c])
        if min(x1 - x0, y1 - y0) < cfg.min_box_side:
            continue
        out_boxes.append((x0, y0, x1, y1))
        out_labels.append(label)
        out_ids.append(k + 1)
        out_frac.append(visible / max(full, 1))
    return (
        np.asarray(out_boxes, np.float32).reshape(-1, 4),
        np.asarray(out_labels, np.int64),
        np.asarray(out_ids, np.int64),
        np.asarray(out_frac, np.float32),
    )


def _extent(code: np.ndarray, c: int, bound: tuple[int, int, int, int]) -> tuple[int, ...]:
    """Tight XYXY (exclusive end) of the pixels equal to c, searched within their drawn bound."""
    bx0, by0, bx1, by1 = bound
    hit = code[by0:by1, bx0:bx1] == c
    rows = np.flatnonzero(hit.any(1))
    cols = np.flatnonzero(hit.any(0))
    return bx0 + int(cols[0]), by0 + int(rows[0]), bx0 + int(cols[-1]) + 1, by0 + int(rows[-1]) + 1
