"""Lighting and weather: how a surface colour at some distance ends up in the image."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RGB = tuple[float, float, float]


@dataclass
class Environment:
    night: bool
    weather: str  # "clear" | "rain" | "fog"
    ambient: RGB  # multiplies surface colours
    fog_rgb: RGB  # what distant surfaces fade to
    fog_density: float  # 1/m; clear weather keeps a light haze for depth
    sky_top: RGB
    sky_horizon: RGB
    sun: tuple[float, float]  # horizontal unit vector towards the light (x, z)
    contrast: float  # 1 = sunny faces, lower = flat light (overcast, night)
    clouds: bool

    def fog_alpha(self, dist: float) -> float:
        return 1.0 - math.exp(-max(dist, 0.0) * self.fog_density)

    def face(self, normal: np.ndarray) -> float:
        """Brightness factor of a face with this outward normal (Y up)."""
        if normal[1] > 0.7:
            return 1.0 + 0.1 * self.contrast
        lit = normal[0] * self.sun[0] + normal[2] * self.sun[1]
        return 1.0 - self.contrast * (0.22 - 0.14 * lit)

    def shade(self, rgb: RGB, alpha: float) -> tuple[int, int, int]:
        """A lit surface colour seen through fog of opacity alpha."""
        a, b = 1.0 - alpha, alpha
        am, fg = self.ambient, self.fog_rgb
        return (
            _u8(rgb[0] * am[0] * a + fg[0] * b),
            _u8(rgb[1] * am[1] * a + fg[1] * b),
            _u8(rgb[2] * am[2] * a + fg[2] * b),
        )

    def emit(self, rgb: RGB, alpha: float) -> tuple[int, int, int]:
        """A light source: not darkened by the ambient light, still dimmed by fog."""
        a, fg = 1.0 - 0.7 * alpha, self.fog_rgb
        b = 1.0 - a
        return (
            _u8(rgb[0] * a + fg[0] * b),
            _u8(rgb[1] * a + fg[1] * b),
            _u8(rgb[2] * a + fg[2] * b),
        )


def _u8(x: float) -> int:
    return 0 if x < 0 else 255 if x > 255 else int(x)


def _jitter(rng: np.random.Generator, rgb: RGB, amount: float) -> RGB:
    d = rng.uniform(-amount, amount, 3)
    return tuple(float(np.clip(c + e, 0, 255)) for c, e in zip(rgb, d))


def make_environment(rng: np.random.Generator, night: bool, weather: str) -> Environment:
    angle = rng.uniform(0, 2 * math.pi)
    sun = (math.cos(angle), math.sin(angle))
    clouds = not night and bool(rng.random() < 0.5)
    if night:
        level = rng.uniform(0.2, 0.32)
        tint = (0.82, 0.88, 1.12)
        sky_top = _jitter(rng, (6, 8, 20), 4)
        sky_horizon = _jitter(rng, (28, 30, 46), 8)
        contrast = 0.25
    else:
        dusk = rng.random() < 0.2
        level = rng.uniform(0.7, 0.88) if dusk else rng.uniform(0.88, 1.12)
        tint = (1.1, 0.96, 0.82) if dusk else (1.0, 1.0, 1.0)
        if dusk:
            sky_top = _jitter(rng, (90, 110, 170), 15)
            sky_horizon = _jitter(rng, (240, 175, 120), 15)
        else:
            sky_top = _jitter(rng, (70, 130, 215), 20)
            sky_horizon = _jitter(rng, (180, 208, 235), 12)
        contrast = 1.0
    if weather == "rain":
        level *= rng.uniform(0.68, 0.8)
        tint = (tint[0] * 0.95, tint[1] * 0.97, tint[2] * 1.03)
        if not night:
            sky_top = _jitter(rng, (112, 118, 128), 10)
            sky_horizon = _jitter(rng, (160, 165, 172), 8)
        contrast *= 0.35
        density = rng.uniform(1 / 150, 1 / 80)
        clouds = False
    elif weather == "fog":
        level *= rng.uniform(0.85, 0.95)
        contrast *= 0.3
        density = rng.uniform(1 / 60, 1 / 22)
        clouds = False
    else:
        density = rng.uniform(1 / 900, 1 / 350)
    ambient = tuple(level * t for t in tint)
    if weather == "fog":
        grey = rng.uniform(185, 215) if not night else rng.uniform(30, 42)
        fog_rgb = (grey * 0.98, grey, grey * 1.02)
        sky_top = sky_horizon = fog_rgb
    else:
        fog_rgb = sky_horizon
    return Environment(
        night=night,
        weather=weather,
        ambient=ambient,
        fog_rgb=fog_rgb,
        fog_density=density,
        sky_top=sky_top,
        sky_horizon=sky_horizon,
        sun=sun,
        contrast=contrast,
        clouds=clouds,
    )
