"""Procedural multi-task indoor scenes: the built-in default dataset (numpy only).

Every sample is a room (floor, four walls, ceiling) seen from a random camera, filled
with furniture-like primitives (boxes, spheres, capped cylinders) and, in some scenes,
an articulated human figure made of capsules and a sphere. All pixels are ray cast at
once (vectorised, one analytic intersection per primitive, bounding-sphere culling),
which gives exact labels for every task:

- ``semseg``: :data:`CLASS_NAMES` (255 = void objects, see ``void_object_prob``)
- camera: pinhole, square pixels, ``ds.intrinsics(i)`` gives K; the ray of pixel (row i,
  column j) is ``K^-1 (j, i, 1)`` (pixel centres at integer coordinates)
- ``depth``: z-depth in metres (distance along the optical axis); 0 = invalid where the
  sensor is out of range (``> max_depth``) or inside random dropout blobs (sensor holes)
- ``normals``: analytic unit normals of the hit surface in the **camera frame** with
  the OpenCV convention (x right, y down, z forward), oriented **toward the camera**
  (``n · ray < 0``, so ``n_z <= 0`` on surfaces facing the camera). They are zero where
  depth is out of range; dropout holes keep valid normals (as a dense ground truth
  fitted offline would) unless ``normals_follow_holes=True``
- ``edge``: instance boundaries (which include every class boundary, since an instance
  has one class), one pixel thin: of two 4-neighbours with different instance ids the
  *nearer* one (smaller z-depth, ties broken by the smaller instance id) is the edge
  pixel, i.e. the boundary belongs to the occluding surface
- ``saliency``: pixels of objects and the figure (everything that is not a room surface)
- ``parts``: :data:`PART_NAMES` on person pixels, 0 elsewhere; all 255 when no figure
  pixel is visible (as PASCAL-Context's parts exist only for images with people)
- ``boxes`` (only when asked): xyxy pixel boxes (``x2 = last column + 1``) of every
  visible, non-void object instance with at least ``min_box_pixels`` pixels, computed
  from the visible instance mask, with ``box_labels`` = semseg class

RGB: Lambertian shading from one point light (inverse-square fall-off) plus ambient, no
shadows, per-class colours mixed with random colours so classes overlap in colour,
procedural solid textures (checker, stripes, sinusoid noise), gamma 2.2 and Gaussian
sensor noise. A deliberate long tail: rare classes (``pillar``, ``vase``), dark
scenes, unusual camera pitch and heavy clutter each occur in a few percent of scenes.

Samples are a pure function of ``(seed, split, index)`` through
``np.random.default_rng([seed, split_code, index])``; splits use different codes so
they never share scenes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from mtal.data.base import DATASETS, MultiTaskDataset

#: semantic classes of the ``semseg`` task, in label order
CLASS_NAMES: tuple[str, ...] = (
    "wall",
    "floor",
    "ceiling",
    "table",
    "cabinet",
    "box",
    "ball",
    "bin",
    "lamp",
    "person",
    "pillar",
    "vase",
)
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}
#: classes that appear in about ``rare_class_prob`` of the scenes each
RARE_CLASSES: tuple[str, ...] = ("pillar", "vase")
#: classes of the room's surfaces (not salient, no boxes)
ROOM_CLASSES: tuple[str, ...] = ("wall", "floor", "ceiling")
#: labels of the ``parts`` task (0 = background, i.e. not the figure)
PART_NAMES: tuple[str, ...] = (
    "background",
    "head",
    "torso",
    "upper_arm",
    "lower_arm",
    "upper_leg",
    "lower_leg",
)
IGNORE = 255
#: seed-stream code of each split; different codes never share scenes
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTHS: dict[str, int] = {"train": 1000, "val": 200, "test": 200}
#: targets ``load`` returns only when asked explicitly (not in ``available_tasks``)
EXTRA_TASKS: tuple[str, ...] = ("boxes",)

_EPS = 1e-6
#: room surfaces are primitives 0..5: x-lo wall, x-hi wall, floor, ceiling, z-lo, z-hi wall
_ROOM_SURFACE_CLASS = np.array([0, 0, 1, 2, 0, 0], dtype=np.int64)
_ROOM_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64
)
_N_ROOM = 6

#: mean colour (linear RGB in [0, 1]) per class; instances mix it with a random colour
_CLASS_COLOURS: dict[str, tuple[float, float, float]] = {
    "wall": (0.75, 0.72, 0.65),
    "floor": (0.55, 0.40, 0.28),
    "ceiling": (0.85, 0.85, 0.82),
    "table": (0.50, 0.35, 0.20),
    "cabinet": (0.60, 0.50, 0.40),
    "box": (0.70, 0.55, 0.35),
    "ball": (0.80, 0.25, 0.20),
    "bin": (0.30, 0.35, 0.40),
    "lamp": (0.90, 0.85, 0.60),
    "person": (0.80, 0.60, 0.50),
    "pillar": (0.70, 0.70, 0.70),
    "vase": (0.30, 0.50, 0.70),
}


@dataclass(frozen=True)
class SceneKnobs:
    """Difficulty knobs of :class:`SyntheticScenes` (all keyword arguments of it)."""

    #: number of common objects per scene (inclusive range)
    n_objects: tuple[int, int] = (3, 8)
    #: probability that a scene contains the articulated figure (person)
    figure_prob: float = 0.5
    #: per rare class, probability that a scene contains one
    rare_class_prob: float = 0.05
    #: per object, probability that it is labelled void (255) in semseg
    void_object_prob: float = 0.03
    #: std of Gaussian sensor noise on the [0, 1] image
    noise_std: float = 0.02
    #: multiplier of the procedural texture contrast (0 = untextured)
    texture_strength: float = 1.0
    #: how far instance colours move from their class colour toward a random colour
    colour_overlap: float = 0.7
    #: probability of a dark scene (weak light, little ambient)
    dark_prob: float = 0.05
    #: probability of a steep camera pitch (35-60 degrees up or down)
    odd_pitch_prob: float = 0.05
    #: probability of a heavily cluttered scene
    clutter_prob: float = 0.05
    #: extra small objects in a cluttered scene (inclusive range)
    clutter_objects: tuple[int, int] = (8, 14)
    #: mean number of depth dropout blobs per image (0 disables holes)
    depth_holes: float = 2.0
    #: depth beyond this (metres) is out of sensor range: depth 0, normals zero
    max_depth: float = 8.0
    #: also zero the normals inside depth dropout holes
    normals_follow_holes: bool = False
    #: horizontal field of view range in degrees
    fov_deg: tuple[float, float] = (55.0, 75.0)
    #: smallest visible instance (pixels) that gets a bounding box
    min_box_pixels: int = 4
    #: consecutive samples that show one scene from a short camera trajectory (video-like
    #: redundancy: groups of near-duplicate frames); 1 = every sample its own scene
    frames_per_scene: int = 1
    #: camera translation between two consecutive frames (metres, a random horizontal
    #: direction per scene)
    frame_step_m: float = 0.05
    #: camera yaw change between two consecutive frames (degrees, sign random per scene)
    frame_yaw_deg: float = 1.5
    #: splits rendered as trajectories; the others keep one frame per scene, so that
    #: validation and test measure on independent scenes
    frame_splits: tuple[str, ...] = ("train",)

    def __post_init__(self) -> None:
        probs = ("figure_prob", "rare_class_prob", "void_object_prob", "dark_prob")
        for name in (*probs, "odd_pitch_prob", "clutter_prob"):
            _check_prob(name, getattr(self, name))
        for name in ("n_objects", "clutter_objects", "fov_deg"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(
                    f"SyntheticScenes: {name}={(lo, hi)} must be (low, high), 0<=low<=high"
                )
        if not 0.0 < self.fov_deg[1] < 170.0:
            raise ValueError(f"SyntheticScenes: fov_deg={self.fov_deg} must lie in (0, 170)")
        if self.max_depth <= 0:
            raise ValueError(f"SyntheticScenes: max_depth={self.max_depth} must be > 0 metres")
        if self.frames_per_scene < 1:
            raise ValueError(
                f"SyntheticScenes: frames_per_scene={self.frames_per_scene} must be >= 1"
            )
        bad_splits = sorted(set(self.frame_splits) - {"train", "val", "test"})
        if bad_splits:
            raise ValueError(
                f"SyntheticScenes: frame_splits has unknown split(s) {bad_splits}; "
                "use any of ['train', 'val', 'test']"
            )
        if self.frame_step_m < 0 or self.frame_yaw_deg < 0:
            raise ValueError("SyntheticScenes: frame_step_m and frame_yaw_deg must be >= 0")
        if self.noise_std < 0 or self.depth_holes < 0 or self.texture_strength < 0:
            raise ValueError(
                "SyntheticScenes: noise_std, depth_holes, texture_strength must be >= 0"
            )


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"SyntheticScenes: {name}={value} must be a probability in [0, 1]")


# ---------------------------------------------------------------------------------
# primitives: bounding sphere, analytic ray intersection and surface normal
# ---------------------------------------------------------------------------------


class _Primitive:
    """A solid the camera is outside of. Rays come as a 3×N array of unit directions
    (structure of arrays: every operation is elementwise over N). ``intersect`` gives the
    entry distance (inf = miss), ``normal`` the outward unit normal at 3×N points."""

    centre: np.ndarray
    bound: float

    def window(
        self, o: np.ndarray, R: np.ndarray, K: np.ndarray, size: tuple[int, int]
    ) -> tuple[int, int, int, int] | None:
        """Pixel rectangle (row0, row1, col0, col1), ends exclusive, that holds every ray
        meeting the bounding sphere; None when no ray can (conservative screen cull)."""
        x, y, z = (self.centre - o) @ R
        r = self.bound
        if z + r <= 0:
            return None
        j0, j1 = _angular_range(x, z, r, K[0, 0], K[0, 2], size[1])
        i0, i1 = _angular_range(y, z, r, K[1, 1], K[1, 2], size[0])
        if j0 >= j1 or i0 >= i1:
            return None
        return i0, i1, j0, j1

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        raise TypeError  # pragma: no cover - every subclass overrides

    def normal(self, p: np.ndarray) -> np.ndarray:
        raise TypeError  # pragma: no cover - every subclass overrides


def _angular_range(x: float, z: float, r: float, f: float, c: float, n: int) -> tuple[int, int]:
    """Pixel index range [lo, hi) along one image axis whose ray planes (through the
    camera and the other image axis) meet the sphere of centre (x, ·, z), radius r."""
    rho = math.hypot(x, z)
    if rho <= r * 1.000001:
        return 0, n
    theta, alpha = math.atan2(x, z), math.asin(r / rho)
    lo, hi = theta - alpha, theta + alpha
    limit = 0.5 * math.pi - 1e-9
    if hi <= -limit or lo >= limit:
        return 0, 0
    u_lo = c + f * math.tan(lo) if lo > -limit else -math.inf
    u_hi = c + f * math.tan(hi) if hi < limit else math.inf
    start = 0 if u_lo < 0 else math.floor(u_lo)
    stop = n if u_hi >= n - 1 else math.ceil(u_hi) + 1
    return max(start, 0), min(stop, n)


def _col(v: np.ndarray) -> np.ndarray:
    return v.reshape(3, 1)


def _unit(v: np.ndarray) -> np.ndarray:
    """Normalise the columns of a 3×N array."""
    return v / np.maximum(np.sqrt((v * v).sum(axis=0)), 1e-12)


@dataclass(eq=False)
class Sphere(_Primitive):
    """Sphere of centre ``centre`` and radius ``radius``."""

    centre: np.ndarray
    radius: float

    def __post_init__(self) -> None:
        self.bound = self.radius

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        oc = o - self.centre
        b = oc @ d
        h = b * b - (oc @ oc - self.radius**2)
        with np.errstate(invalid="ignore"):
            t = -b - np.sqrt(h)
        return np.where((h >= 0) & (t > _EPS), t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        return _unit(p - _col(self.centre))


@dataclass(eq=False)
class Box(_Primitive):
    """Box of half extents ``half`` around ``centre``, rotated by ``yaw`` about +y."""

    centre: np.ndarray
    half: np.ndarray
    yaw: float

    def __post_init__(self) -> None:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        #: rows: the box's local axes in world coordinates
        self.axes = np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
        self.bound = float(np.linalg.norm(self.half))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = _col(self.axes @ (o - self.centre))
        half = _col(self.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / (self.axes @ d)
            t1 = (-half - ol) * inv
            t2 = (half - ol) * inv
        tn = np.minimum(t1, t2).max(axis=0)
        tf = np.maximum(t1, t2).min(axis=0)
        return np.where((tn <= tf) & (tn > _EPS), tn, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        pl = self.axes @ (p - _col(self.centre))
        q = np.abs(pl) / _col(self.half)
        x_face = (q[0] >= q[1]) & (q[0] >= q[2])
        y_face = ~x_face & (q[1] >= q[2])
        z_face = ~x_face & ~y_face
        nl = np.sign(pl) * np.stack([x_face, y_face, z_face])
        return self.axes.T @ nl


@dataclass(eq=False)
class Capsule(_Primitive):
    """Capsule: points within ``radius`` of the segment ``a``-``b`` (limbs, torso)."""

    a: np.ndarray
    b: np.ndarray
    radius: float

    def __post_init__(self) -> None:
        self.centre = 0.5 * (self.a + self.b)
        self.bound = 0.5 * float(np.linalg.norm(self.b - self.a)) + self.radius

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ba = self.b - self.a
        oa = o - self.a
        ob = o - self.b
        baba, baoa, oaoa, obob = ba @ ba, ba @ oa, oa @ oa, ob @ ob
        bard, rdoa = ba @ d, oa @ d
        qa = baba - bard * bard
        qb = baba * rdoa - baoa * bard
        qc = baba * oaoa - baoa * baoa - self.radius**2 * baba
        h = qb * qb - qa * qc
        with np.errstate(divide="ignore", invalid="ignore"):
            t_body = (-qb - np.sqrt(h)) / qa
            y = baoa + t_body * bard
            body = (h >= 0) & (y > 0) & (y < baba)
            # otherwise the end sphere on the side where the cylinder hit fell
            below = y <= 0
            cap_b = np.where(below, rdoa, ob @ d)
            cap_c = np.where(below, oaoa, obob) - self.radius**2
            hc = cap_b * cap_b - cap_c
            t_cap = -cap_b - np.sqrt(hc)
        t = np.where(body, t_body, np.where((h >= 0) & (hc > 0), t_cap, np.inf))
        return np.where(t > _EPS, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        ba = self.b - self.a
        rel = p - _col(self.a)
        s = np.clip(ba @ rel / (ba @ ba), 0.0, 1.0)
        return _unit(rel - _col(ba) * s)


@dataclass(eq=False)
class Cylinder(_Primitive):
    """Capped (flat-ended) cylinder of ``radius`` around the segment ``a``-``b``."""

    a: np.ndarray
    b: np.ndarray
    radius: float

    def __post_init__(self) -> None:
        self.centre = 0.5 * (self.a + self.b)
        self.bound = math.hypot(0.5 * float(np.linalg.norm(self.b - self.a)), self.radius)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ba = self.b - self.a
        oc = o - self.a
        baba, baoc = ba @ ba, ba @ oc
        bard = ba @ d
        k2 = baba - bard * bard
        k1 = baba * (oc @ d) - baoc * bard
        k0 = baba * (oc @ oc) - baoc * baoc - self.radius**2 * baba
        h = k1 * k1 - k2 * k0
        with np.errstate(divide="ignore", invalid="ignore"):
            sh = np.sqrt(h)
            t_body = (-k1 - sh) / k2
            y = baoc + t_body * bard
            body = (h >= 0) & (y > 0) & (y < baba)
            t_cap = (np.where(y < 0, 0.0, baba) - baoc) / bard
            cap = (h >= 0) & (np.abs(k1 + k2 * t_cap) < sh)
        t = np.where(body, t_body, np.where(cap, t_cap, np.inf))
        return np.where(t > _EPS, t, np.inf)

    def normal(self, p: np.ndarray) -> np.ndarray:
        ba = self.b - self.a
        length = float(np.linalg.norm(ba))
        axis = ba / length
        rel = p - _col(self.a)
        y = axis @ rel
        radial = rel - _col(axis) * y
        d_body = np.abs(np.sqrt((radial * radial).sum(axis=0)) - self.radius)
        d_cap = np.minimum(np.abs(y), np.abs(length - y))
        cap_n = _col(axis) * np.where(y < 0.5 * length, -1.0, 1.0)
        return np.where(d_body < d_cap, _unit(radial), cap_n)


# ---------------------------------------------------------------------------------
# materials and textures
# ---------------------------------------------------------------------------------


@dataclass
class Material:
    """Albedo = lerp(colour_a, colour_b, strength * texture(p)) on world points p;
    ``texture`` names an entry of :data:`TEXTURES`."""

    colour_a: np.ndarray
    colour_b: np.ndarray
    texture: str = "plain"
    scale: float = 0.3
    direction: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    phase: float = 0.0
    strength: float = 1.0


def _tex_plain(p: np.ndarray, m: Material) -> np.ndarray:
    return np.zeros(p.shape[1])


def _tex_checker(p: np.ndarray, m: Material) -> np.ndarray:
    cells = np.floor(p * (1.0 / m.scale) + 1e-4).sum(axis=0)
    return np.mod(cells, 2.0)


def _tex_stripes(p: np.ndarray, m: Material) -> np.ndarray:
    return (np.sin((m.direction * (2 * np.pi / m.scale)) @ p + m.phase) > 0).astype(np.float64)


def _tex_noise(p: np.ndarray, m: Material) -> np.ndarray:
    k = m.direction * (2 * np.pi / m.scale)
    waves = np.stack([k, 2.3 * k[[1, 2, 0]], 4.1 * k[[2, 0, 1]]]) @ p
    waves += _col(np.array([m.phase, 1.7 * m.phase, 0.0]))
    return 0.5 + np.array([1.0, 0.6, 0.3]) @ np.sin(waves) / 3.8


#: procedural solid textures, by name, each mapping 3×N world points to [0, 1]^N
TEXTURES: dict[str, Callable[[np.ndarray, Material], np.ndarray]] = {
    "plain": _tex_plain,
    "checker": _tex_checker,
    "stripes": _tex_stripes,
    "noise": _tex_noise,
}


def albedo(p: np.ndarray, m: Material) -> np.ndarray:
    """Albedo (3×N linear RGB) of material ``m`` at 3×N world points ``p``."""
    if m.texture == "plain" or m.strength == 0:
        return np.broadcast_to(_col(m.colour_a), p.shape)
    mix = np.clip(TEXTURES[m.texture](p, m) * m.strength, 0.0, 1.0)
    return _col(m.colour_a) + _col(m.colour_b - m.colour_a) * mix


# ---------------------------------------------------------------------------------
# scene description and builder
# ---------------------------------------------------------------------------------


@dataclass
class Scene:
    """A sampled scene: camera, light, room and primitives with their labels."""

    size: tuple[int, int]
    K: np.ndarray
    R: np.ndarray  # camera-to-world rotation, columns = camera x (right), y (down), z
    position: np.ndarray
    room: np.ndarray  # (width_x, height_y, depth_z); the room spans [0, room]
    light: np.ndarray
    light_power: float
    ambient: float
    light_tint: np.ndarray
    prims: list[_Primitive]
    prim_class: np.ndarray  # per primitive incl. the 6 room surfaces (255 = void)
    prim_instance: np.ndarray
    prim_part: np.ndarray
    prim_material: np.ndarray  # per primitive incl. room: index into ``materials``
    materials: list[Material]
    flags: dict[str, bool]


class _SceneBuilder:
    """Samples camera, room, light and objects from one generator."""

    def __init__(self, rng: np.random.Generator, knobs: SceneKnobs, size: tuple[int, int]) -> None:
        self.rng, self.knobs, self.size = rng, knobs, size
        self._draws: list[float] = []
        self.prims: list[_Primitive] = []
        self.cls: list[int] = []
        self.inst: list[int] = []
        self.part: list[int] = []
        self.mats: list[Material] = []
        self.next_instance = _N_ROOM + 1
        self.footprints: list[tuple[float, float, float]] = []
        self.tables: list[tuple[float, float, float, float, float, float]] = []

    # -- sampling helpers ----------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.r()

    def r(self) -> float:
        """A uniform draw in [0, 1) from a pre-drawn buffer (Python floats are fast)."""
        if not self._draws:
            self._draws = self.rng.random(256).tolist()
            self._draws.reverse()
        return self._draws.pop()

    def randint(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        return min(int(self.r() * n), n - 1)

    def pick(self, weights: Sequence[float]) -> int:
        """An index drawn with probability proportional to ``weights``."""
        target, acc = self.r() * sum(weights), 0.0
        for i, wt in enumerate(weights):
            acc += wt
            if target < acc:
                return i
        return len(weights) - 1

    def material(self, cls: str, textures: Sequence[str], probs: Sequence[float]) -> Material:
        """A material whose colour mixes the class colour with a random colour."""
        r = self.r
        w = self.knobs.colour_overlap * (0.5 + 0.5 * r())
        mean = _CLASS_COLOURS[cls]
        a = np.array([(1 - w) * c + w * (0.05 + 0.95 * r()) for c in mean])
        if r() < 0.5:
            b = a * (0.45 + 0.4 * r())
        else:
            b = 0.5 * a + 0.5 * np.array([0.05 + 0.95 * r() for _ in range(3)])
        # uniform direction on the sphere
        cz, phi = 2.0 * r() - 1.0, 2.0 * math.pi * r()
        sz = math.sqrt(max(1.0 - cz * cz, 0.0))
        return Material(
            colour_a=a,
            colour_b=b,
            texture=textures[self.pick(probs)],
            scale=self.u(0.15, 0.6),
            direction=np.array([sz * math.cos(phi), sz * math.sin(phi), cz]),
            phase=self.u(0.0, 2 * math.pi),
            strength=self.u(0.3, 1.0) * self.knobs.texture_strength,
        )

    def object_material(self, cls: str) -> Material:
        return self.material(cls, ("plain", "checker", "stripes", "noise"), (0.4, 0.15, 0.2, 0.25))

    def add(
        self,
        prims: Sequence[_Primitive],
        cls: str,
        mats: Sequence[Material],
        parts: Sequence[int] | None = None,
    ) -> None:
        """Add one object instance made of ``prims`` (one material per primitive)."""
        label = CLASS_ID[cls]
        if self.r() < self.knobs.void_object_prob:
            label = IGNORE
        parts = parts if parts is not None else [0] * len(prims)
        for prim, mat, part in zip(prims, mats, parts, strict=True):
            self.prims.append(prim)
            self.cls.append(label)
            self.inst.append(self.next_instance)
            self.part.append(part)
            self.mats.append(mat)
        self.next_instance += 1

    def free(self, x: float, z: float, r: float) -> bool:
        """Whether a floor footprint of radius ``r`` at (x, z) fits in the room and
        overlaps neither the camera nor other floor objects."""
        wx, _, wz = self.room
        if not (r < x < wx - r and r < z < wz - r):
            return False
        return all(
            (x - fx) ** 2 + (z - fz) ** 2 > (r + fr + 0.05) ** 2 for fx, fz, fr in self.footprints
        )

    def place(self, r: float, tries: int = 10) -> tuple[float, float] | None:
        """A free floor spot of radius ``r``, biased into the camera's view."""
        half_fov = 0.5 * self.fov
        for _ in range(tries):
            ang = self.yaw + self.u(-1.1, 1.1) * half_fov
            dist = self.u(1.0, 5.5)
            x = float(self.position[0] + dist * math.sin(ang))
            z = float(self.position[2] + dist * math.cos(ang))
            if self.free(x, z, r):
                self.footprints.append((x, z, r))
                return x, z
        return None

    def on_table(self, hx: float, hz: float) -> tuple[float, float, float] | None:
        """A random spot (x, y, z) on top of a placed table for an item of half size."""
        if not self.tables:
            return None
        x, z, top, w, d, yaw = self.tables[self.randint(len(self.tables))]
        lx = self.u(-1, 1) * max(w / 2 - hx, 0.0)
        lz = self.u(-1, 1) * max(d / 2 - hz, 0.0)
        c, s = math.cos(yaw), math.sin(yaw)
        return x + c * lx + s * lz, top, z - s * lx + c * lz

    # -- the scene -------------------------------------------------------------------
    def build(self) -> Scene:
        k = self.knobs
        h, w = self.size
        self.room = np.array([self.u(4.0, 8.0), self.u(2.5, 3.2), self.u(4.0, 8.0)])
        self.position = np.array(
            [self.u(0.5, self.room[0] - 0.5), self.u(1.0, 1.7), self.u(0.5, self.room[2] - 0.5)]
        )
        to_centre = math.atan2(
            self.room[0] / 2 - self.position[0], self.room[2] / 2 - self.position[2]
        )
        self.yaw = to_centre + self.u(-0.8, 0.8)
        odd_pitch = bool(self.r() < k.odd_pitch_prob)
        if odd_pitch:
            pitch = math.radians(self.u(35, 60)) * (1 if self.r() < 0.5 else -1)
        else:
            pitch = math.radians(self.u(-25, 5))
        self.fov = math.radians(self.u(*k.fov_deg))
        fx = (w / 2) / math.tan(self.fov / 2)
        K = np.array([[fx, 0, (w - 1) / 2], [0, fx, (h - 1) / 2], [0, 0, 1.0]])
        fwd = np.array(
            [
                math.sin(self.yaw) * math.cos(pitch),
                math.sin(pitch),
                math.cos(self.yaw) * math.cos(pitch),
            ]
        )
        right = np.array([-math.cos(self.yaw), 0.0, math.sin(self.yaw)])
        down = np.array(
            [
                fwd[1] * right[2] - fwd[2] * right[1],
                fwd[2] * right[0] - fwd[0] * right[2],
                fwd[0] * right[1] - fwd[1] * right[0],
            ]
        )
        R = np.stack([right, down, fwd], axis=1)
        self.footprints.append((float(self.position[0]), float(self.position[2]), 0.45))

        dark = bool(self.r() < k.dark_prob)
        light = np.array(
            [self.u(0.5, self.room[0] - 0.5), self.room[1] - 0.3, self.u(0.5, self.room[2] - 0.5)]
        )
        power = self.u(0.15, 0.35) if dark else self.u(0.8, 1.3)
        ambient = self.u(0.02, 0.06) if dark else self.u(0.12, 0.3)
        tint = np.array([self.u(0.9, 1.1) for _ in range(3)])

        wall = self.material("wall", ("plain", "stripes", "noise"), (0.4, 0.3, 0.3))
        floor = self.material("floor", ("checker", "stripes", "noise"), (0.45, 0.35, 0.2))
        ceiling = self.material("ceiling", ("plain", "noise"), (0.7, 0.3))
        room_mats = [wall, wall, floor, ceiling, wall, wall]

        names = list(_COMMON_OBJECTS)
        probs = [_COMMON_OBJECTS[n] for n in names]
        n_obj = k.n_objects[0] + self.randint(k.n_objects[1] - k.n_objects[0] + 1)
        chosen = [names[self.pick(probs)] for _ in range(n_obj)]
        for rare in RARE_CLASSES:
            if self.r() < k.rare_class_prob:
                chosen.append(rare)
        clutter = bool(self.r() < k.clutter_prob)
        if clutter:
            lo, hi = k.clutter_objects
            small = ("box", "ball", "bin")
            chosen += [small[self.randint(3)] for _ in range(lo + self.randint(hi - lo + 1))]
        has_figure = bool(self.r() < k.figure_prob)
        if has_figure:
            chosen.append("person")
        # tables first so that items can stand on them
        chosen.sort(key=lambda name: name != "table")
        for name in chosen:
            OBJECT_BUILDERS[name](self)

        all_mats = room_mats + self.mats
        mat_index: dict[int, int] = {}
        materials: list[Material] = []
        for m in all_mats:
            if id(m) not in mat_index:
                mat_index[id(m)] = len(materials)
                materials.append(m)
        return Scene(
            size=self.size,
            K=K,
            R=R,
            position=self.position,
            room=self.room,
            light=light,
            light_power=power,
            ambient=ambient,
            light_tint=tint,
            prims=self.prims,
            prim_class=np.concatenate([_ROOM_SURFACE_CLASS, np.array(self.cls, dtype=np.int64)]),
            prim_instance=np.concatenate(
                [np.arange(1, _N_ROOM + 1), np.array(self.inst, dtype=np.int64)]
            ).astype(np.int32),
            prim_part=np.concatenate([np.zeros(_N_ROOM), np.array(self.part)]).astype(np.uint8),
            prim_material=np.array([mat_index[id(m)] for m in all_mats], dtype=np.int64),
            materials=materials,
            flags={"dark": dark, "odd_pitch": odd_pitch, "clutter": clutter, "figure": has_figure},
        )


def _v(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def _build_table(b: _SceneBuilder) -> None:
    w, d, top, thick = b.u(0.8, 1.6), b.u(0.6, 1.0), b.u(0.7, 0.8), 0.06
    spot = b.place(0.5 * math.hypot(w, d))
    if spot is None:
        return
    x, z = spot
    yaw = b.u(0, math.pi)
    mat = b.object_material("table")
    slab = Box(_v(x, top - thick / 2, z), _v(w / 2, thick / 2, d / 2), yaw)
    leg = Cylinder(_v(x, 0.0, z), _v(x, top - thick, z), b.u(0.05, 0.09))
    b.add([slab, leg], "table", [mat, mat])
    b.tables.append((x, z, top, w, d, yaw))


def _build_cabinet(b: _SceneBuilder) -> None:
    w, d, h = b.u(0.5, 1.2), b.u(0.35, 0.6), b.u(0.9, 2.0)
    wx, _, wz = b.room
    for _ in range(6):
        side = b.randint(4)
        # against one of the four walls, front facing into the room
        if side < 2:
            along = b.u(w / 2 + 0.05, wz - w / 2 - 0.05)
            x, z, yaw = (d / 2 + 0.01 if side == 0 else wx - d / 2 - 0.01), along, math.pi / 2
        else:
            along = b.u(w / 2 + 0.05, wx - w / 2 - 0.05)
            x, z, yaw = along, (d / 2 + 0.01 if side == 2 else wz - d / 2 - 0.01), 0.0
        r = 0.5 * math.hypot(w, d)
        if all((x - fx) ** 2 + (z - fz) ** 2 > (r + fr + 0.05) ** 2 for fx, fz, fr in b.footprints):
            b.footprints.append((x, z, r))
            box = Box(_v(x, h / 2, z), _v(w / 2, h / 2, d / 2), yaw)
            b.add([box], "cabinet", [b.object_material("cabinet")])
            return


def _build_box(b: _SceneBuilder) -> None:
    half = _v(b.u(0.1, 0.25), b.u(0.1, 0.25), b.u(0.1, 0.25))
    spot3 = b.on_table(half[0], half[2]) if b.r() < 0.5 else None
    if spot3 is not None:
        x, y, z = spot3
    else:
        spot = b.place(float(np.hypot(half[0], half[2])))
        if spot is None:
            return
        (x, z), y = spot, 0.0
    box = Box(_v(x, y + half[1], z), half, b.u(0, math.pi))
    b.add([box], "box", [b.object_material("box")])


def _build_ball(b: _SceneBuilder) -> None:
    r = b.u(0.1, 0.3)
    spot = b.place(r)
    if spot is not None:
        b.add([Sphere(_v(spot[0], r, spot[1]), r)], "ball", [b.object_material("ball")])


def _build_bin(b: _SceneBuilder) -> None:
    r, h = b.u(0.12, 0.25), b.u(0.3, 0.6)
    spot = b.place(r)
    if spot is not None:
        x, z = spot
        b.add([Cylinder(_v(x, 0, z), _v(x, h, z), r)], "bin", [b.object_material("bin")])


def _build_lamp(b: _SceneBuilder) -> None:
    h, shade = b.u(1.3, 1.8), b.u(0.14, 0.22)
    spot = b.place(max(shade, 0.25))
    if spot is not None:
        x, z = spot
        mat = b.object_material("lamp")
        pole = Cylinder(_v(x, 0, z), _v(x, h, z), b.u(0.02, 0.035))
        globe = Sphere(_v(x, h + 0.6 * shade, z), shade)
        b.add([pole, globe], "lamp", [mat, mat])


def _build_pillar(b: _SceneBuilder) -> None:
    r = b.u(0.15, 0.3)
    spot = b.place(r, tries=30)
    if spot is not None:
        x, z = spot
        b.add(
            [Cylinder(_v(x, 0, z), _v(x, b.room[1], z), r)], "pillar", [b.object_material("pillar")]
        )


def _build_vase(b: _SceneBuilder) -> None:
    r, neck, neck_h = b.u(0.08, 0.13), b.u(0.035, 0.05), b.u(0.1, 0.2)
    spot3 = b.on_table(r, r) if b.r() < 0.8 else None
    if spot3 is None:
        spot = b.place(r, tries=30)
        if spot is None:
            return
        spot3 = (spot[0], 0.0, spot[1])
    x, y, z = spot3
    mat = b.object_material("vase")
    body = Sphere(_v(x, y + r, z), r)
    top = Cylinder(_v(x, y + 1.6 * r, z), _v(x, y + 1.6 * r + neck_h, z), neck)
    b.add([body, top], "vase", [mat, mat])


def _rot_limb(abduct: float, swing: float, side: float) -> np.ndarray:
    """Unit limb direction: hanging down, abducted sideways then swung about x."""
    return _v(
        side * math.sin(abduct),
        -math.cos(abduct) * math.cos(swing),
        -math.cos(abduct) * math.sin(swing),
    )


def _build_person(b: _SceneBuilder) -> None:
    """An articulated figure: head sphere, torso capsule, two-segment arms and legs."""
    s = b.u(1.5, 1.9) / 1.75
    spot = b.place(0.4 * s, tries=20)
    if spot is None:
        return
    r_limb, r_torso, r_head = 0.055 * s, b.u(0.14, 0.18) * s, b.u(0.1, 0.12) * s
    hip_y, sh_y = 0.92 * s, 1.42 * s
    segs: list[tuple[np.ndarray, np.ndarray, float, int]] = [
        (_v(0, hip_y, 0), _v(0, sh_y - 0.03 * s, 0), r_torso, 2)
    ]
    for side in (-1.0, 1.0):
        hip = _v(side * 0.09 * s, hip_y, 0)
        swing, knee = b.u(-0.5, 0.5), b.u(0.0, 0.9)
        knee_p = hip + 0.44 * s * _rot_limb(0.03, swing, side)
        ankle = knee_p + 0.44 * s * _rot_limb(0.03, swing + knee, side)
        segs += [(hip, knee_p, r_limb * 1.2, 5), (knee_p, ankle, r_limb, 6)]
        shoulder = _v(side * 0.2 * s, sh_y, 0)
        abduct = b.u(1.0, 2.6) if b.r() < 0.15 else b.u(0.05, 0.4)
        swing = b.u(-0.8, 0.8)
        elbow = shoulder + 0.3 * s * _rot_limb(abduct, swing, side)
        wrist = elbow + 0.28 * s * _rot_limb(abduct, swing - b.u(0.0, 1.4), side)
        segs += [(shoulder, elbow, r_limb, 3), (elbow, wrist, r_limb * 0.9, 4)]
    lowest = min(min(p[1], q[1]) - r for p, q, r, _ in segs)
    yaw = b.u(0, 2 * math.pi)
    c, si = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, 0, si], [0, 1, 0], [-si, 0, c]])
    shift = _v(spot[0], -lowest, spot[1])

    def world(p: np.ndarray) -> np.ndarray:
        return rot @ p + shift

    skin, shirt, trousers = (b.object_material("person") for _ in range(3))
    part_mat = {
        1: skin,
        2: shirt,
        3: shirt,
        4: skin if b.r() < 0.5 else shirt,
        5: trousers,
        6: trousers,
    }
    prims: list[_Primitive] = [Sphere(world(_v(0, sh_y + 0.05 * s + r_head, 0)), r_head)]
    parts = [1]
    for p, q, r, part in segs:
        prims.append(Capsule(world(p), world(q), r))
        parts.append(part)
    b.add(prims, "person", [part_mat[p] for p in parts], parts)


#: object builders by class name: each samples one instance into the scene
OBJECT_BUILDERS: dict[str, Callable[[_SceneBuilder], None]] = {
    "table": _build_table,
    "cabinet": _build_cabinet,
    "box": _build_box,
    "ball": _build_ball,
    "bin": _build_bin,
    "lamp": _build_lamp,
    "pillar": _build_pillar,
    "vase": _build_vase,
    "person": _build_person,
}
#: relative frequency of the common (non-rare) object classes
_COMMON_OBJECTS: dict[str, float] = {
    "table": 0.2,
    "cabinet": 0.15,
    "box": 0.25,
    "ball": 0.13,
    "bin": 0.15,
    "lamp": 0.12,
}


# ---------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------


@dataclass
class SceneRender:
    """Every buffer of one rendered sample (targets plus the geometry behind them)."""

    image: np.ndarray  # H×W×3 uint8
    semseg: np.ndarray  # H×W uint8, 255 = void
    depth: np.ndarray  # H×W float32 z-depth metres, 0 = invalid
    zdepth: np.ndarray  # H×W float32 z-depth before sensor holes / range cut
    normals: np.ndarray  # H×W×3 float32 camera frame, zero = invalid
    edge: np.ndarray  # H×W uint8 {0, 1}
    saliency: np.ndarray  # H×W uint8 {0, 1}
    parts: np.ndarray  # H×W uint8, 255 everywhere when no figure is visible
    instance: np.ndarray  # H×W int32 instance id (1..6 room surfaces, >= 7 objects)
    primitive: np.ndarray  # H×W int32 index of the primitive hit (0..5 room surfaces)
    boxes: np.ndarray  # N×4 float32 xyxy
    box_labels: np.ndarray  # N int64
    K: np.ndarray  # 3×3 intrinsics (pixel (col j, row i) has u = j, v = i)
    flags: dict[str, bool]


def edges_from_instances(instance: np.ndarray, zdepth: np.ndarray) -> np.ndarray:
    """One-pixel-thin boundaries: of two 4-neighbours with different ids, mark the
    nearer one (smaller z-depth; ties: smaller id)."""
    edge = np.zeros(instance.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b_ = [slice(None), slice(None)]
        a[axis], b_[axis] = slice(None, -1), slice(1, None)
        ia, ib = instance[tuple(a)], instance[tuple(b_)]
        za, zb = zdepth[tuple(a)], zdepth[tuple(b_)]
        differ = ia != ib
        a_near = (za < zb) | ((za == zb) & (ia < ib))
        edge[tuple(a)] |= differ & a_near
        edge[tuple(b_)] |= differ & ~a_near
    return edge


def _boxes(
    instance: np.ndarray, labels: np.ndarray, min_pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """xyxy boxes (x2, y2 exclusive pixel edges) of instances >= 7 with a class."""
    keep = (instance > _N_ROOM) & (labels != IGNORE)
    rows, cols = np.nonzero(keep)
    if rows.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    ids = instance[rows, cols]
    order = np.argsort(ids, kind="stable")
    ids, rows, cols = ids[order], rows[order], cols[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    counts = np.diff(np.r_[starts, ids.size])
    boxes = np.stack(
        [
            np.minimum.reduceat(cols, starts),
            np.minimum.reduceat(rows, starts),
            np.maximum.reduceat(cols, starts) + 1,
            np.maximum.reduceat(rows, starts) + 1,
        ],
        axis=1,
    ).astype(np.float32)
    box_labels = labels[rows[starts], cols[starts]].astype(np.int64)
    big = counts >= min_pixels
    return boxes[big], box_labels[big]


def render_scene(scene: Scene, knobs: SceneKnobs, rng: np.random.Generator) -> SceneRender:
    """Ray cast ``scene`` (one ray per pixel centre) and derive every task's target;
    ``rng`` draws the sensor noise and depth holes."""
    h, w = scene.size
    K, R, o = scene.K, scene.R, scene.position
    du, dv, grid = _pixel_grid(h, w)
    dc = np.empty((3, h * w))
    dc[0] = (du - K[0, 2]) / K[0, 0]
    dc[1] = (dv - K[1, 2]) / K[1, 1]
    dc[2] = 1.0
    dnorm = np.sqrt((dc * dc).sum(axis=0))
    d = (R @ dc) / dnorm  # 3×N unit world directions

    # the room, seen from inside: the nearest exit plane along each ray
    ahead = d > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = (np.where(ahead, _col(scene.room), 0.0) - _col(o)) / d
    t_axes[d == 0] = np.inf
    tx, ty, tz = t_axes
    x_hit = (tx <= ty) & (tx <= tz)
    y_hit = ~x_hit & (ty <= tz)
    best_t = np.minimum(np.minimum(tx, ty), tz)
    best = np.where(x_hit, ahead[0], np.where(y_hit, 2 + ahead[1], 4 + ahead[2]))

    hits: list[tuple[int, np.ndarray]] = []
    for k, prim in enumerate(scene.prims, start=_N_ROOM):
        win = prim.window(o, R, K, (h, w))
        if win is None:
            continue
        idx = grid[win[0] : win[1], win[2] : win[3]].ravel()
        tk = prim.intersect(o, d[:, idx])
        closer = tk < best_t[idx]
        sel = idx[closer]
        if sel.size:
            best_t[sel] = tk[closer]
            best[sel] = k
            hits.append((k, idx))

    p = _col(o) + d * best_t
    # room planes: normals by lookup, albedo per room material
    normal_w = _ROOM_NORMALS.T[:, np.minimum(best, _N_ROOM - 1)]
    base = np.empty_like(p)
    mat_of = scene.prim_material[best]
    for k in np.unique(scene.prim_material[:_N_ROOM]):
        m = np.flatnonzero(mat_of == k)
        if m.size:
            base[:, m] = albedo(p[:, m], scene.materials[k])
    # objects: analytic normal and albedo of the primitive hit
    for k, idx in hits:
        m = idx[best[idx] == k]
        if m.size:
            pk = p[:, m]
            normal_w[:, m] = scene.prims[k - _N_ROOM].normal(pk)
            base[:, m] = albedo(pk, scene.materials[scene.prim_material[k]])
    facing = (normal_w * d).sum(axis=0)
    normal_w *= np.where(facing > 0, -1.0, 1.0)

    # shading: Lambert + inverse-square point light + ambient, gamma, sensor noise
    to_light = _col(scene.light) - p
    dist2 = (to_light * to_light).sum(axis=0)
    lambert = np.maximum((normal_w * to_light).sum(axis=0), 0.0) / np.sqrt(dist2)
    irradiance = scene.ambient + scene.light_power * lambert * 4.0 / np.maximum(dist2, 0.25)
    rgb = (base * irradiance * _col(scene.light_tint)).astype(np.float32)
    rgb = np.clip(rgb, 0.0, 1.0) ** np.float32(1 / 2.2)
    if knobs.noise_std > 0:
        rgb += np.float32(knobs.noise_std) * rng.standard_normal(rgb.shape, dtype=np.float32)
    image = (np.clip(rgb, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).T.reshape(h, w, 3)

    zdepth = (best_t / dnorm).reshape(h, w)
    normals = (R.T @ normal_w).T.reshape(h, w, 3)
    instance = scene.prim_instance[best].reshape(h, w)
    cls = scene.prim_class[best].reshape(h, w)
    semseg = cls.astype(np.uint8)

    out_of_range = zdepth > knobs.max_depth
    holes = _dropout_blobs(rng, (h, w), knobs.depth_holes)
    depth = np.where(out_of_range | holes, 0.0, zdepth).astype(np.float32)
    bad_normals = out_of_range | holes if knobs.normals_follow_holes else out_of_range
    normals = np.where(bad_normals[..., None], 0.0, normals).astype(np.float32)

    person = cls == CLASS_ID["person"]
    if person.any():
        parts = np.where(person, scene.prim_part[best].reshape(h, w), 0).astype(np.uint8)
    else:
        parts = np.full((h, w), IGNORE, dtype=np.uint8)
    boxes, box_labels = _boxes(instance, cls, knobs.min_box_pixels)
    return SceneRender(
        image=image,
        semseg=semseg,
        depth=depth,
        zdepth=zdepth.astype(np.float32),
        normals=normals,
        edge=edges_from_instances(instance, zdepth).astype(np.uint8),
        saliency=(instance > _N_ROOM).astype(np.uint8),
        parts=parts,
        instance=instance,
        primitive=best.reshape(h, w).astype(np.int32),
        boxes=boxes,
        box_labels=box_labels,
        K=K.copy(),
        flags=dict(scene.flags),
    )


def move_camera(scene: Scene, knobs: SceneKnobs, rng: np.random.Generator, frame: int) -> Scene:
    """``scene`` seen from frame ``frame`` of its short camera trajectory.

    The trajectory is centred on the sampled pose: frame f moves the camera by
    ``(f - (F-1)/2) · frame_step_m`` along a horizontal direction drawn from ``rng`` and
    turns it about the vertical axis by the same multiple of ``frame_yaw_deg`` (sign
    drawn from ``rng``); the position is kept at least 0.3 m inside the room."""
    offset = frame - (knobs.frames_per_scene - 1) / 2.0  # only called on trajectory splits
    heading = 2.0 * math.pi * float(rng.random())
    sign = 1.0 if float(rng.random()) < 0.5 else -1.0
    step = np.array([math.sin(heading), 0.0, math.cos(heading)]) * knobs.frame_step_m
    position = scene.position + offset * step
    margin = np.array([0.3, 0.3, 0.3])
    position = np.clip(position, margin, scene.room - margin)
    a = sign * math.radians(knobs.frame_yaw_deg) * offset
    turn = np.array(
        [[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]]
    )
    return dataclasses.replace(scene, R=turn @ scene.R, position=position)


@functools.lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat pixel coordinates u (column), v (row) and the H×W grid of flat indices."""
    grid = np.arange(h * w).reshape(h, w)
    grid.flags.writeable = False
    u = (grid % w).astype(np.float64).ravel()
    v = (grid // w).astype(np.float64).ravel()
    return u, v, grid


def _dropout_blobs(rng: np.random.Generator, shape: tuple[int, int], mean: float) -> np.ndarray:
    """Random elliptic sensor holes; their number is Poisson(``mean``)."""
    h, w = shape
    mask = np.zeros(shape, dtype=bool)
    n = int(rng.poisson(mean)) if mean > 0 else 0
    if n == 0:
        return mask
    ii, jj = np.ogrid[:h, :w]
    for ci, cj, ri, rj in zip(
        rng.uniform(0, h, n), rng.uniform(0, w, n), rng.uniform(1.5, 5, n), rng.uniform(1.5, 5, n)
    ):
        mask |= ((ii - ci) / ri) ** 2 + ((jj - cj) / rj) ** 2 <= 1.0
    return mask


# ---------------------------------------------------------------------------------
# the dataset
# ---------------------------------------------------------------------------------

_KNOB_NAMES = tuple(f.name for f in fields(SceneKnobs))
#: arrays returned for a target whose keys differ from its name
_LOAD_KEYS: dict[str, tuple[str, ...]] = {"boxes": ("boxes", "box_labels")}


@DATASETS.register("synthetic")
class SyntheticScenes(MultiTaskDataset):
    """Procedural indoor scenes with semseg, depth, normals, edge, saliency, parts (and
    boxes on request); deterministic per ``(seed, split, index)``, numpy only.

    Difficulty knobs (see :class:`SceneKnobs`) are keyword arguments. ``cache=True``
    keeps every rendered sample in memory (about 120 kB each at 64×80).
    """

    available_tasks = ("semseg", "depth", "normals", "edge", "saliency", "parts")
    num_classes = {"semseg": len(CLASS_NAMES), "parts": len(PART_NAMES)}
    extra_tasks = EXTRA_TASKS
    class_names = CLASS_NAMES
    part_names = PART_NAMES

    def __init__(
        self,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        size: tuple[int, int] = (64, 80),
        length: int | None = None,
        seed: int = 0,
        cache: bool = False,
        **knobs: Any,
    ) -> None:
        if split not in SPLIT_CODES:
            raise ValueError(
                f"SyntheticScenes: unknown split {split!r}; use one of {list(SPLIT_CODES)}"
            )
        super().__init__(split, tasks)
        unknown = sorted(set(knobs) - set(_KNOB_NAMES))
        if unknown:
            raise TypeError(
                f"SyntheticScenes got unknown option(s) {unknown}; difficulty knobs are "
                f"{list(_KNOB_NAMES)}"
            )
        h, w = (int(v) for v in size)
        if h < 8 or w < 8:
            raise ValueError(f"SyntheticScenes: size={tuple(size)} must be (height, width) >= 8 px")
        self.size = (h, w)
        self.length = DEFAULT_LENGTHS[split] if length is None else int(length)
        if self.length < 0:
            raise ValueError(f"SyntheticScenes: length={length} must be >= 0")
        self.seed = int(seed)
        self.knobs = SceneKnobs(**knobs)
        self.cache = cache
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.length

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < self.length:
            raise IndexError(
                f"SyntheticScenes({self.split!r}): index {index} out of range [0, {self.length})"
            )
        return np.random.default_rng([self.seed, SPLIT_CODES[self.split], int(index)])

    def scene_of(self, index: int) -> tuple[int, int]:
        """(scene, frame) of sample ``index``: ``frames_per_scene`` consecutive samples
        show one scene."""
        self._rng(index)  # range check
        return divmod(int(index), self.frames_per_scene)

    @property
    def frames_per_scene(self) -> int:
        """Frames per scene of this split (1 outside ``frame_splits``)."""
        k = self.knobs
        return k.frames_per_scene if self.split in k.frame_splits else 1

    def scene(self, index: int) -> Scene:
        """The sampled (not rendered) scene of sample ``index``, seen from its frame."""
        return self._frame(index)[0]

    def _frame(self, index: int) -> tuple[Scene, np.random.Generator]:
        """The scene of sample ``index`` and the generator of its sensor noise.

        With one frame per scene, sample i is scene i drawn from ``(seed, split, i)``
        (unchanged). With F frames, the scene and its trajectory come from
        ``(seed, split, i // F)`` and each frame's noise and depth holes from
        ``(seed, split, i // F, frame)``."""
        if self.frames_per_scene == 1:
            rng = self._rng(index)
            return _SceneBuilder(rng, self.knobs, self.size).build(), rng
        scene_index, frame = self.scene_of(index)
        base = [self.seed, SPLIT_CODES[self.split], scene_index]
        rng = np.random.default_rng(base)
        scene = _SceneBuilder(rng, self.knobs, self.size).build()
        scene = move_camera(scene, self.knobs, rng, frame)
        return scene, np.random.default_rng([*base, frame])

    def render(self, index: int) -> SceneRender:
        """All buffers of sample ``index`` (always rendered afresh)."""
        scene, rng = self._frame(index)
        return render_scene(scene, self.knobs, rng)

    def _targets(self, index: int) -> dict[str, np.ndarray]:
        """The loadable arrays of sample ``index``, from the cache when enabled."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        r = self.render(index)
        out = {name: getattr(r, name) for name in ("image", *self.available_tasks)}
        out["boxes"], out["box_labels"] = r.boxes, r.box_labels
        if self.cache:
            self._cache[index] = out
        return out

    def intrinsics(self, index: int) -> np.ndarray:
        """3×3 pinhole intrinsics of sample ``index`` (pixel column j has u = j)."""
        return self.scene(index).K

    def image_id(self, index: int) -> str:
        return f"synthetic-s{self.seed}-{self.split}-{index:06d}"

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """The image plus the asked targets; ``"boxes"`` adds ``boxes`` and ``box_labels``."""
        allowed = self.available_tasks + EXTRA_TASKS
        bad = [t for t in tasks if t not in allowed]
        if bad:
            raise ValueError(f"SyntheticScenes cannot load {bad}; known targets: {list(allowed)}")
        arrays = self._targets(index)
        out: dict[str, Any] = {"image": arrays["image"].copy()}
        for task in tasks:
            for key in _LOAD_KEYS.get(task, (task,)):
                out[key] = arrays[key].copy()
        return out
