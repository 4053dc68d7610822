"""Layouts of the four scene types. Each lays ground, props and objects into a World.

The types are kept visually distinct on purpose (a small network must tell them apart):
highway = wide multi-lane road, barriers, open land; urban = tall facades at the kerb, many
people; residential = houses with gardens and trees; parking = rows of parked cars on asphalt.
"""

from __future__ import annotations

import math

import numpy as np

from .classes import PAVEMENT, ROAD, TREE
from .objects import vary
from .world import Road, World

ASPHALT = (100, 100, 104)
GRASS = (92, 128, 60)
WALK = (160, 158, 152)
KERB = (196, 196, 190)
WHITE = (226, 226, 220)
YELLOW = (226, 188, 52)


def _road(w: World, s_cam: float, max_curv: float = 0.001, max_slope: float = 0.04) -> None:
    rng = w.rng
    curv = 0.0 if rng.random() < 0.5 else rng.uniform(-max_curv, max_curv)
    w.road = Road(-s_cam + rng.normal(0, 0.25), rng.uniform(-max_slope, max_slope), curv)


def _far_z(z0: float, z1: float, u: float, power: float = 1.4) -> float:
    """More objects near than far (as a driver sees them), still some far away."""
    return z0 + (z1 - z0) * u**power


def highway(w: World) -> None:
    rng = w.rng
    n = int(rng.integers(2, 5))
    lw, med, shoulder = rng.uniform(3.5, 3.8), rng.uniform(0.8, 4.0), rng.uniform(1.5, 3.0)
    inner = med / 2
    outer = inner + n * lw
    edge = outer + shoulder
    _road(w, inner + (int(rng.integers(n)) + 0.5) * lw)
    w.start(vary(rng, GRASS, 12), TREE)
    asphalt = vary(rng, ASPHALT, 10)
    w.band(-edge - 0.5, edge + 0.5, 0.3, 320, asphalt, ROAD)
    dash, gap = rng.uniform(3.0, 6.0), rng.uniform(6.0, 12.0)
    for side in (-1, 1):
        for k in range(1, n):
            w.dashes(side * (inner + k * lw), 1, 160, dash, gap, 0.15, WHITE)
        w.line(side * (outer + 0.15), 0.3, 250, 0.2, WHITE)
        w.line(side * (inner + 0.3), 0.3, 250, 0.15, YELLOW if rng.random() < 0.3 else WHITE)
    # median barrier, outer guard rails
    if rng.random() < 0.6:
        w.along(0.0, 1.0, 220, 5.0, lambda x, z, yaw, ln: w.props.barrier(x, z, yaw, ln))
    else:
        for s in (-0.25, 0.25):
            w.along(s, 1.0, 200, 5.0, lambda x, z, yaw, ln: w.props.rail(x, z, yaw, ln))
    for side in (-1, 1):
        if rng.random() < 0.8:
            w.along(
                side * (edge + 0.4),
                1.0,
                180,
                6.0,
                lambda x, z, yaw, ln: w.props.rail(x, z, yaw, ln),
            )
    if rng.random() < 0.65:  # lamps on the median, arms both ways
        z = rng.uniform(5, 40)
        while z < 200:
            x, zz = w.at(0.0, z)
            for reach in (-1.8, 1.8):
                w.prop(w.props.lamp(x, zz, 10.0, reach), x, zz)
            z += rng.uniform(35, 55)
    if rng.random() < 0.5:
        z = rng.uniform(35, 110)
        w.elements.append(w.props.gantry(w.road.x(-edge, z), w.road.x(edge, z), z))
    for _ in range(int(rng.integers(0, 3))):
        x, z = w.at(edge + 1.5, rng.uniform(10, 90))
        w.prop(w.props.sign(x, z), x, z)
    # open land: tree clusters, very few buildings, a far tree line
    for side in (-1, 1):
        for _ in range(int(rng.integers(3, 12))):
            s = side * (edge + rng.uniform(8, 45))
            x, z = w.at(s, rng.uniform(5, 160))
            w.prop(w.props.tree(x, z, rng.uniform(6, 14), conifer=rng.random() < 0.5), x, z, 1.0)
    for _ in range(int(rng.integers(0, 3))):
        side = -1 if rng.random() < 0.5 else 1
        z = rng.uniform(40, 160)
        x, _ = w.at(side * (edge + rng.uniform(30, 70)), z)
        el = w.props.building(
            x, z, w.road.yaw(z), rng.uniform(20, 50), rng.uniform(15, 30), rng.uniform(6, 14)
        )
        w.elements.append(el)  # a lone block, depth-sorted with the trees around it
    w.backdrop.append(w.props.treeline(-300, 300, rng.uniform(220, 300), rng.uniform(10, 18)))
    # traffic: both carriageways, no pedestrians
    lanes = [(inner + (k + 0.5) * lw, False) for k in range(n)]
    lanes += [(-inner - (k + 0.5) * lw, True) for k in range(n)]
    kinds = {"car": 0.7, "truck": 0.2, "bus": 0.05, "motorcycle": 0.05}

    def sample():
        s, oncoming = lanes[int(rng.integers(len(lanes)))]
        z = _far_z(4, 150, rng.random())
        return w.choose(kinds), s + rng.normal(0, 0.15), z, w.road.yaw(z) + math.pi * oncoming

    w.place(w.target((6, 18)), sample)


def urban(w: World) -> None:
    rng = w.rng
    nl = int(rng.choice((2, 3, 4)))
    lw = rng.uniform(3.0, 3.4)
    two_way = rng.random() < 0.7
    park = 2.2 if rng.random() < 0.5 else 0.0
    lanes_half = nl * lw / 2
    half = lanes_half + park
    walk = rng.uniform(2.5, 5.0)
    facade = half + walk
    lanes = [(-lanes_half + (k + 0.5) * lw) for k in range(nl)]
    forward = [s for s in lanes if not two_way or s > 0] or lanes
    _road(w, forward[int(rng.integers(len(forward)))], max_curv=0.0006)
    pave = vary(rng, WALK if rng.random() < 0.7 else (168, 128, 112), 10)
    w.start(pave, PAVEMENT)
    w.band(-half, half, 0.3, 320, vary(rng, ASPHALT, 10), ROAD)
    for side in (-1, 1):
        w.band(side * half, side * (half + 0.25), 0.3, 300, KERB, PAVEMENT)
    for k in range(1, nl):
        s = -lanes_half + k * lw
        if two_way and abs(s) < 1e-6:
            w.line(s - 0.12, 0.3, 200, 0.12, YELLOW)
            w.line(s + 0.12, 0.3, 200, 0.12, YELLOW)
        else:
            w.dashes(s, 1, 120, 3.0, rng.uniform(4, 8), 0.13, WHITE)
    # a cross street with a zebra crossing and traffic lights
    cross = rng.random() < 0.6
    zc, cw = rng.uniform(18, 55), rng.uniform(10, 16)
    if cross:
        w.patch(-200, 200, zc, zc + cw, vary(rng, ASPHALT, 8), ROAD)
        k = int(2 * half / 1.0)
        s0 = -half + 0.25 + np.arange(k) * 1.0
        w.marks(s0, s0 + 0.5, np.full(k, zc - 4.5), np.full(k, zc - 1.0), WHITE)
        w.marks([0.0], [half], [zc - 5.3], [zc - 4.95], WHITE)
        x, z = w.at(half + 0.5, zc - 1.0)
        w.prop(w.props.traffic_light(x, z, arm=-min(2 * lw, half)), x, z)
        x, z = w.at(-half - 0.5, zc - 1.0)
        w.prop(w.props.traffic_light(x, z), x, z)
        x, z = w.at(-half - 0.5, zc + cw + 1.0)
        w.prop(w.props.traffic_light(x, z, arm=min(2 * lw, half)), x, z)
    # facades at the back of the sidewalk, tall and continuous
    for side in (-1, 1):
        z = -rng.uniform(0, 10)
        while z < 230:
            length = rng.uniform(8, 26)
            if cross and z < zc + cw + 1 and z + length > zc - 1:
                z = zc + cw + 1
                continue
            depth = rng.uniform(12, 22)
            zm = z + length / 2
            x, _ = w.at(side * (facade + depth / 2), zm)
            h = rng.uniform(10, 48)
            w.backdrop.append(
                w.props.building(x, zm, w.road.yaw(zm), length, depth, h, shop=rng.random() < 0.6)
            )
            z += length + (rng.uniform(2, 6) if rng.random() < 0.12 else 0.0)
    w.backdrop.append(w.props.skyline(-150, 150, rng.uniform(240, 300), rng.uniform(40, 90)))
    # street furniture on the kerb side of the sidewalks
    for side in (-1, 1):
        z = rng.uniform(3, 25)
        while z < 160:
            x, zz = w.at(side * (half + 0.45), z)
            w.prop(w.props.lamp(x, zz), x, zz)
            z += rng.uniform(22, 35)
        if rng.random() < 0.5:
            z = rng.uniform(4, 12)
            while z < 110:
                x, zz = w.at(side * (half + 1.3), z)
                w.prop(w.props.tree(x, zz, rng.uniform(5, 8)), x, zz, 0.6)
                z += rng.uniform(9, 15)
        if rng.random() < 0.3:
            z0 = rng.uniform(2, 20)
            w.along(
                side * (half + 0.35),
                z0,
                z0 + rng.uniform(8, 30),
                3.0,
                lambda x, z, yaw, ln: w.props.rail(x, z, yaw, ln, 1.0, (60, 64, 60), 1.5),
            )
    for _ in range(int(rng.integers(1, 5))):
        side = -1 if rng.random() < 0.5 else 1
        x, z = w.at(side * (half + 0.35), rng.uniform(5, 70))
        w.prop(w.props.sign(x, z), x, z)
    for _ in range(int(rng.integers(0, 6))):
        side = -1 if rng.random() < 0.5 else 1
        x, z = w.at(side * (half + 0.35), rng.uniform(3, 50))
        w.prop(w.props.pole(x, z, 0.9, 0.16, (70, 72, 74)), x, z)
    # many people, traffic, parked cars, cyclists
    total = w.target((15, 40))
    n_people = int(round(total * rng.uniform(0.45, 0.65)))
    n_bikes = int(round(total * 0.1))

    def walker():
        side = -1 if rng.random() < 0.5 else 1
        if cross and rng.random() < 0.2:
            return "person", rng.uniform(-half, half), zc - 2.75 + rng.uniform(-1.2, 1.2), 0.0
        return (
            "person",
            side * rng.uniform(half + 0.6, facade - 0.4),
            _far_z(3, 90, rng.random(), 1.2),
            0.0,
        )

    def vehicle():
        z = _far_z(4, 110, rng.random())
        if park and rng.random() < 0.4:
            side = -1 if rng.random() < 0.5 else 1
            return (
                "car",
                side * (lanes_half + 1.1),
                z,
                w.road.yaw(z) + math.pi * (side < 0 and two_way),
            )
        s = lanes[int(rng.integers(nl))]
        kind = w.choose({"car": 0.75, "bus": 0.12, "truck": 0.13})
        return kind, s + rng.normal(0, 0.2), z, w.road.yaw(z) + math.pi * (two_way and s < 0)

    def cyclist():
        z = _far_z(4, 80, rng.random())
        kind = "bicycle" if rng.random() < 0.7 else "motorcycle"
        if rng.random() < 0.3:  # crossing or turning: seen from the side
            return kind, rng.uniform(-half, half), z, rng.choice((-1, 1)) * rng.uniform(0.6, 1.6)
        s = lanes_half - 0.7 if not park else lanes_half + 1.0
        return kind, s, z, w.road.yaw(z)

    w.place(n_people, walker)
    w.place(n_bikes, cyclist)
    w.place(total - n_people - n_bikes, vehicle)


def residential(w: World) -> None:
    rng = w.rng
    lw = rng.uniform(2.8, 3.3)
    half = lw
    verge, walk, yard = rng.uniform(0.8, 2.2), rng.uniform(1.4, 2.0), rng.uniform(4.0, 9.0)
    walk0 = half + verge
    walk1 = walk0 + walk
    front = walk1 + yard
    _road(w, lw / 2, max_curv=0.0015)
    grass = vary(rng, GRASS, 12)
    w.start(grass, TREE)
    w.band(-half, half, 0.3, 300, vary(rng, ASPHALT, 10), ROAD)
    pave = vary(rng, WALK, 10)
    for side in (-1, 1):
        w.band(side * half, side * (half + 0.2), 0.3, 250, KERB, PAVEMENT)
        w.band(side * walk0, side * walk1, 0.3, 250, pave, PAVEMENT)
    if rng.random() < 0.5:
        w.dashes(0.0, 1, 120, 3.0, 6.0, 0.12, YELLOW if rng.random() < 0.4 else WHITE)
    # houses behind gardens, each with a fence or hedge and maybe a tree and a drive
    for side in (-1, 1):
        z = -rng.uniform(0, 6)
        while z < 170:
            length, depth = rng.uniform(9, 15), rng.uniform(8, 12)
            zm = z + length / 2
            setback = rng.uniform(0, 3)
            x, _ = w.at(side * (front + setback + depth / 2), zm)
            w.backdrop.append(w.props.house(x, zm, w.road.yaw(zm), length, depth))
            plot = length + rng.uniform(3, 9)
            drive = z + rng.uniform(0, plot - 3.2)
            if rng.random() < 0.5:
                w.marks(
                    [side * half],
                    [side * (front + setback)],
                    [drive],
                    [drive + 3.0],
                    pave,
                    PAVEMENT,
                )
            if z < 90:
                kind = rng.random()
                if kind < 0.35:
                    colour = vary(rng, (230, 230, 225) if rng.random() < 0.5 else (130, 95, 65), 10)
                    w.along(
                        side * (walk1 + 0.2),
                        z,
                        z + plot,
                        4.0,
                        lambda x, zz, yaw, ln, c=colour: w.props.fence(x, zz, yaw, ln, 1.1, c),
                    )
                elif kind < 0.7:
                    h = rng.uniform(0.9, 1.6)
                    w.along(
                        side * (walk1 + 0.5),
                        z,
                        z + plot,
                        4.0,
                        lambda x, zz, yaw, ln, h=h: w.props.hedge(x, zz, yaw, ln, h),
                    )
                if rng.random() < 0.6:
                    x, zz = w.at(side * (walk1 + rng.uniform(1.5, yard)), z + rng.uniform(0, plot))
                    w.prop(w.props.tree(x, zz, rng.uniform(5, 10)), x, zz, 0.8)
            z += plot
    for side in (-1, 1):
        if rng.random() < 0.75:
            z = rng.uniform(3, 15)
            while z < 140:
                x, zz = w.at(side * (half + verge / 2 + 0.1), z)
                w.prop(w.props.tree(x, zz, rng.uniform(7, 12)), x, zz, 0.6)
                z += rng.uniform(12, 22)
    side = -1 if rng.random() < 0.5 else 1
    z = rng.uniform(5, 30)
    while z < 150:
        x, zz = w.at(side * (half + 0.4), z)
        if rng.random() < 0.5:
            w.prop(w.props.lamp(x, zz, rng.uniform(6, 8)), x, zz)
        else:
            w.prop(w.props.pole(x, zz, rng.uniform(8, 10), 0.28, (96, 76, 58)), x, zz)
        z += rng.uniform(28, 40)
    for _ in range(int(rng.integers(0, 3))):
        side = -1 if rng.random() < 0.5 else 1
        x, z = w.at(side * (half + 0.4), rng.uniform(5, 60))
        w.prop(w.props.sign(x, z), x, z)
    w.backdrop.append(w.props.treeline(-250, 250, rng.uniform(200, 260), rng.uniform(10, 16)))
    # quiet traffic: parked cars at both kerbs, a few moving, a few people and cyclists
    total = w.target((6, 16))

    def sample():
        u = rng.random()
        z = _far_z(4, 90, rng.random(), 1.2)
        if u < 0.2:
            side = -1 if rng.random() < 0.5 else 1
            return "person", side * rng.uniform(walk0 + 0.3, walk1 - 0.3), z, 0.0
        if u < 0.32:
            kind = "bicycle" if rng.random() < 0.75 else "motorcycle"
            return kind, half - 1.0, z, w.road.yaw(z)
        if u < 0.8:
            side = -1 if rng.random() < 0.5 else 1
            flip = rng.random() < 0.5 if side < 0 else rng.random() < 0.1
            return "car", side * (half - 0.95), z, w.road.yaw(z) + math.pi * flip
        s = lw / 2 if rng.random() < 0.5 else -lw / 2
        kind = w.choose({"car": 0.85, "truck": 0.1, "bus": 0.05})
        return kind, s, z, w.road.yaw(z) + math.pi * (s < 0)

    w.place(total, sample)


def parking(w: World) -> None:
    rng = w.rng
    aisle, depth, stall = rng.uniform(3.0, 3.6), 5.4, rng.uniform(2.5, 2.8)
    w.road = Road(rng.normal(0, 0.4), rng.uniform(-0.12, 0.12), 0.0)
    w.start(vary(rng, (112, 112, 114), 10), ROAD)
    z0, z1 = rng.uniform(1.5, 6.0), rng.uniform(60, 90)
    # rows of stalls: two back to back on each side of every aisle
    rows = []
    s = aisle
    while s < 42:
        rows += [(s, s + depth), (s + depth, s + 2 * depth)]
        s += 2 * depth + 2 * aisle
    paint = WHITE if rng.random() < 0.7 else YELLOW
    n_st = int((z1 - z0) / stall) + 1
    zs = z0 + np.arange(n_st + 1) * stall
    for side in (-1, 1):
        for a, b in rows:
            lo, hi = (a, b) if side > 0 else (-b, -a)
            w.marks(np.full(len(zs), lo), np.full(len(zs), hi), zs - 0.06, zs + 0.06, paint)
    for side in (-1, 1):  # islands with bushes at the row ends
        for a, b in rows[::2]:
            lo, hi = (a, b + depth) if side > 0 else (-b - depth, -a)
            w.band(lo, hi, z1 + 0.3, z1 + 3.0, vary(rng, WALK, 8), PAVEMENT)
            if rng.random() < 0.6:
                x, z = w.at(side * (a + depth), z1 + 1.6)
                w.prop(w.props.tree(x, z, rng.uniform(4, 7)), x, z, 0.8)
    # the shop at the far end, lamps, trees around
    zb = z1 + rng.uniform(10, 30)
    x, _ = w.at(0.0, zb + 10)
    w.backdrop.append(
        w.props.building(x, zb + 10, w.road.yaw(zb), 20.0, 130.0, rng.uniform(6, 11), shop=True)
    )
    w.backdrop.append(w.props.treeline(-250, 250, zb + rng.uniform(60, 120), rng.uniform(10, 16)))
    for side in (-1, 1):
        for _ in range(int(rng.integers(3, 9))):
            x, z = w.at(side * rng.uniform(45, 70), rng.uniform(5, z1))
            w.prop(w.props.tree(x, z, rng.uniform(6, 11)), x, z, 1.0)
    for a, _ in rows[1::2][:2]:
        for side in (-1, 1):
            z = rng.uniform(8, 25)
            while z < z1:
                x, zz = w.at(side * (a + 0.3), z)
                w.prop(w.props.lamp(x, zz, rng.uniform(9, 12), 0.0), x, zz, 0.5)
                z += rng.uniform(25, 40)
    for _ in range(int(rng.integers(0, 4))):
        side = -1 if rng.random() < 0.5 else 1
        x, z = w.at(side * (aisle - 0.2), rng.uniform(4, z1))
        w.prop(w.props.pole(x, z, 1.0, 0.2, (200, 180, 40)), x, z, 0.3)
    # parked cars fill the stalls, inner rows first; a few people and moving cars in the aisle
    total = w.target((25, 60))
    n_people = int(round(total * rng.uniform(0.08, 0.2)))
    n_moving = int(rng.integers(0, 3))
    occupancy = rng.uniform(0.55, 0.95)
    parked, want = 0, total - n_people - n_moving
    for a, b in rows:
        for side in (-1, 1):
            for zz in (zs[:-1] + stall / 2).tolist():
                if parked >= want:
                    break
                if rng.random() > occupancy:
                    continue
                nose_out = rng.random() < 0.25
                yaw = w.road.yaw(zz) + side * math.pi / 2 + math.pi * nose_out + rng.normal(0, 0.05)
                s = side * (0.5 * (a + b) + rng.normal(0, 0.15))
                kind = "car" if rng.random() < 0.93 else "truck"
                parked += w.object(kind, s, zz + rng.normal(0, 0.12), yaw)

    def aisle_sample():
        if rng.random() < 0.8 or n_moving == 0:
            return "person", rng.uniform(-aisle, aisle), _far_z(3, z1, rng.random()), 0.0
        z = _far_z(6, z1, rng.random())
        return "car", rng.uniform(-1.0, 1.0), z, w.road.yaw(z) + math.pi * (rng.random() < 0.5)

    w.place(n_people + n_moving, aisle_sample)


BUILDERS = {"highway": highway, "urban": urban, "residential": residential, "parking": parking}
