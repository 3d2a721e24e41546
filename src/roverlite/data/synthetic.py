"""Procedural Mars-like terrain scenes with exact masks, for demos and fast tests only.

The scenes imitate the look of AI4Mars navcam frames closely enough for a small U-Net to learn
something in a few epochs: fine-grained soil, bright polygonal bedrock slabs with cracks, rippled
sand, a few shaded big rocks with cast shadows, and unlabelled sky / far range at the top and
sometimes part of the rover deck in a bottom corner. Every mask is the exact record of how its
scene was drawn, so a model's score on these scenes says nothing about real terrain: never quote
it as an accuracy claim.

Labels follow AI4Mars: soil 0, bedrock 1, sand 2, big_rock 3, unlabelled 255.

Example:
    >>> source = SyntheticSource(count=8, image_size=(64, 64), seed=0)
    >>> image, mask = source.read(source.ids()[0])
    >>> image.shape, mask.shape
    ((64, 64, 1), (64, 64))
"""

from __future__ import annotations

import functools

import numpy as np

from roverlite.data.source import DataError, DataSource

SOIL, BEDROCK, SAND, BIG_ROCK, UNLABELLED = 0, 1, 2, 3, 255
ID_PREFIX = "synthetic_"


# === Public API ===


def generate_scene(rng: np.random.Generator, size: tuple[int, int] = (128, 128)) -> tuple[np.ndarray, np.ndarray]:
    """Draw one terrain scene and its exact label mask.

    Args:
        rng: source of all randomness; the scene is a pure function of its state.
        size: ``(height, width)`` in pixels, each at least 8.

    Returns:
        ``(image, mask)``: image uint8 of shape ``(H, W, 1)``, mask uint8 of shape ``(H, W)`` with
        ids 0..3 and 255 for sky, far range and rover body.
    """
    h, w = _check_size(size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yn, xn = yy / h, xx / w
    mask = np.zeros((h, w), np.uint8)
    image = _soil(rng, h, w)

    _draw_bedrock(rng, image, mask, xx, yy)
    _draw_sand(rng, image, mask, xx, yy)
    horizon = _horizon(rng, h, w)
    light = _unit(rng.uniform(0.0, 2.0 * np.pi))
    _draw_rocks(rng, image, mask, horizon, light)
    _draw_sky(rng, image, mask, yy, horizon)
    if rng.random() < 0.3:
        _draw_rover_deck(rng, image, mask, xn, yn)

    # A smooth exposure gradient (sun angle, vignetting) so no fixed intensity threshold separates
    # the classes across a whole image, then sensor noise.
    direction = _unit(rng.uniform(0.0, 2.0 * np.pi))
    tilt = rng.uniform(0.0, 0.3) * ((xn - 0.5) * direction[0] + (yn - 0.5) * direction[1])
    gain = rng.uniform(0.8, 1.15) * (1.0 + tilt)
    image = image * gain + _noise(rng, 0.015, (h, w))
    image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return image[..., None], mask


class SyntheticSource(DataSource):
    """A fixed-size collection of procedural scenes, regenerated on every read.

    Scene ``i`` depends only on ``(seed, i)``, never on which scenes were read before it, so any
    subset or order of reads gives the same samples. There are no predefined splits. Meant for
    demos and fast tests; its scores are never evidence about real terrain.

    Args:
        count: number of scenes (>= 1).
        image_size: ``(height, width)`` of every scene, each at least 8.
        seed: selects the collection.
    """

    def __init__(self, count: int = 64, image_size: tuple[int, int] = (128, 128), seed: int = 0) -> None:
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"Expected count to be a positive integer. Received: count={count!r}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Expected seed to be a non-negative integer. Received: seed={seed!r}.")
        self.count = int(count)
        self.image_size = _check_size(image_size)
        self.seed = int(seed)
        self.root = f"synthetic:seed={self.seed}"
        # Zero-padded to a common width so lexical order equals numeric order.
        self._width = max(4, len(str(self.count - 1)))

    def ids(self) -> list[str]:
        return [f"{ID_PREFIX}{i:0{self._width}d}" for i in range(self.count)]

    def splits(self) -> dict[str, list[str]] | None:
        return None

    def read(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        index = self._index(sample_id)
        rng = np.random.default_rng([self.seed, index])
        return generate_scene(rng, self.image_size)

    def _index(self, sample_id: str) -> int:
        digits = sample_id[len(ID_PREFIX):] if isinstance(sample_id, str) and sample_id.startswith(ID_PREFIX) else ""
        if not digits.isdigit() or not 0 <= int(digits) < self.count:
            raise DataError(
                f"Unknown synthetic sample in {self.root}. Expected an id like "
                f"'{ID_PREFIX}{0:0{self._width}d}' below {self.count}. Received: {sample_id!r}."
            )
        return int(digits)


# === Terrain layers ===


def _soil(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Fine-grained regolith with a few pebbles; pebbles stay soil, as in AI4Mars."""
    grain = _noise(rng, 0.08, (h, w))
    # Averaging with a one-pixel shift gives grains about two pixels wide instead of pure white noise.
    grain += np.roll(grain, 1, axis=1)
    image = rng.uniform(0.36, 0.48) + 0.6 * grain + 0.05 * _smooth_noise(rng, h, w, cells=6)
    pebbles = rng.random((h, w)) < 0.01
    image[pebbles] += rng.choice(np.array([-0.15, 0.12], np.float32), size=int(pebbles.sum()))
    return image


def _draw_bedrock(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, xx: np.ndarray, yy: np.ndarray
) -> None:
    """Flat polygonal slabs (Voronoi cells) with dark cracks along slab joints and outer edges."""
    h, w = mask.shape
    cells = int(rng.integers(10, 18))
    points = rng.uniform((0.0, 0.0), (h, w), size=(cells, 2)).astype(np.float32)
    slab = _voronoi(points, h, w)
    # Slabs cluster where a low-frequency field is high, so bedrock forms outcrops, not confetti.
    field = _smooth_noise(rng, h, w, cells=3)
    score = field[points[:, 0].astype(int), points[:, 1].astype(int)] + rng.normal(0.0, 0.3, cells)
    chosen = score >= np.quantile(score, 1.0 - rng.uniform(0.1, 0.55))
    region = chosen[slab]
    if not region.any():
        return
    slab_level = (rng.uniform(0.5, 0.6) + rng.normal(0.0, 0.05, cells)).astype(np.float32)
    texture = slab_level[slab[region]] + 0.04 * _smooth_noise(rng, h, w, cells=10)[region]
    texture -= 0.22 * _edges(slab)[region] + 0.12 * _edges(region)[region]
    texture -= 0.2 * _cracks(rng, xx[region], yy[region], h, w)
    image[region] = texture + _noise(rng, 0.02, texture.shape)
    mask[region] = BEDROCK


def _draw_sand(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, xx: np.ndarray, yy: np.ndarray
) -> None:
    """Wind ripples: oriented sinusoidal bands, gently warped, over a smooth sand sheet."""
    h, w = mask.shape
    field = _smooth_noise(rng, h, w, cells=int(rng.integers(2, 5)))
    share = rng.uniform(0.0, 0.45)
    if share < 0.02:
        return
    region = (field >= np.quantile(field, 1.0 - share)) & (mask == SOIL)
    n = int(region.sum())
    if n == 0:
        return
    angle = rng.uniform(0.0, np.pi)
    wavelength = rng.uniform(4.0, 8.0) * min(h, w) / 128.0 + 2.5
    x, y = xx[region], yy[region]
    # Ripple crests bunch up towards the top of the frame, as they would in perspective.
    along = (x * np.cos(angle) + y * np.sin(angle)) * (1.3 - 0.6 * y / h)
    phase = (2.0 * np.pi / wavelength) * along + 2.5 * _smooth_noise(rng, h, w, cells=4)[region]
    level, amplitude = rng.uniform(0.44, 0.54), rng.uniform(0.05, 0.09)
    image[region] = level + amplitude * np.sin(phase) + _noise(rng, 0.02, (n,))
    mask[region] = SAND


def _draw_rocks(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, horizon: np.ndarray, light: np.ndarray
) -> None:
    """A few big rocks: lumpy ellipses shaded by one light direction, each casting a shadow."""
    h, w = mask.shape
    for _ in range(int(rng.poisson(2.0))):
        cy = rng.uniform(max(horizon.max(), 0.0) + 2.0, h)
        cx = rng.uniform(0.0, w)
        # Rocks nearer the camera (lower in the frame) look bigger.
        radius = min(h, w) * rng.uniform(0.045, 0.085) * (0.6 + 0.6 * cy / h)
        squash = rng.uniform(0.55, 0.9)
        box = int(np.ceil(radius * 1.6)) + 2
        y0, y1 = max(int(cy) - box, 0), min(int(cy) + box + 1, h)
        x0, x1 = max(int(cx) - box, 0), min(int(cx) + box + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        by, bx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        inside, nx, ny = _rock_shape(rng, bx - cx, (by - cy) / squash, radius)
        shadow = _rock_shape_shifted(inside, light, radius)
        window = (slice(y0, y1), slice(x0, x1))
        ground = image[window]
        ground[shadow & ~inside] *= rng.uniform(0.45, 0.65)
        nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.0, 1.0))
        lambert = np.clip(0.55 * (nx * light[0] + ny * light[1]) + 0.45 * nz, 0.0, 1.0)
        albedo = rng.uniform(0.35, 0.55)
        rock = albedo * (0.45 + 0.9 * lambert) + _noise(rng, 0.03, inside.shape)
        ground[inside] = rock[inside]
        mask[window][inside] = BIG_ROCK


def _draw_sky(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, yy: np.ndarray, horizon: np.ndarray
) -> None:
    """Unlabelled top band: smooth sky over a blurred far-range strip just above the horizon."""
    h, w = mask.shape
    above = yy < horizon[None, :]
    if not above.any():
        return
    sky_line = horizon * rng.uniform(0.3, 0.7)
    sky = rng.uniform(0.55, 0.8) - 0.1 * yy / h
    far = rng.uniform(0.38, 0.52) + 0.04 * _smooth_noise(rng, h, w, cells=12) + 0.02 * np.sin(yy * 1.7)
    band = np.where(yy < sky_line[None, :], sky, far).astype(np.float32)
    image[above] = band[above]
    mask[above] = UNLABELLED


def _draw_rover_deck(
    rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, xn: np.ndarray, yn: np.ndarray
) -> None:
    """Part of the rover body in a bottom corner: a dark quadrilateral with panel seams."""
    left = rng.random() < 0.5
    u = xn if left else 1.0 - xn
    depth, reach = rng.uniform(0.15, 0.35), rng.uniform(0.25, 0.5)
    region = (yn > 1.0 - depth) & (u < reach * (yn - (1.0 - depth)) / depth + rng.uniform(0.0, 0.1))
    if not region.any():
        return
    seams = (np.mod(u * 9.0, 1.0) < 0.08) | (np.mod(yn * 11.0, 1.0) < 0.08)
    deck = rng.uniform(0.2, 0.32) + 0.25 * seams + 0.1 * (yn - 0.7)
    image[region] = deck[region]
    mask[region] = UNLABELLED


# === Helpers ===


def _horizon(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Row index of the horizon for every column; all below zero when the camera looks down."""
    if rng.random() < 0.15:
        return np.full(w, -1.0, np.float32)
    base = rng.uniform(0.12, 0.3) * h
    wobble = 0.04 * h * _smooth_noise(rng, 1, w, cells=5)[0]
    return (base + wobble).astype(np.float32)


def _rock_shape(
    rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inside-mask and surface normals (x, y) of a lumpy disc given offsets from its centre."""
    theta = np.arctan2(dy, dx)
    lumps = np.ones_like(theta)
    for k in (2, 3, 5):
        lumps += rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0.0, 2.0 * np.pi))
    rho = np.sqrt(dx**2 + dy**2) / (radius * lumps)
    inside = rho < 1.0
    safe = np.maximum(np.sqrt(dx**2 + dy**2), 1e-6)
    return inside, rho * dx / safe, rho * dy / safe


def _rock_shape_shifted(inside: np.ndarray, light: np.ndarray, radius: float) -> np.ndarray:
    """The rock's silhouette pushed away from the light: the ground it shades."""
    shift_y, shift_x = (int(round(-light[1] * radius * 0.7)), int(round(-light[0] * radius * 0.7)))
    out = np.zeros_like(inside)
    h, w = inside.shape
    src = inside[max(-shift_y, 0): h - max(shift_y, 0), max(-shift_x, 0): w - max(shift_x, 0)]
    out[max(shift_y, 0): max(shift_y, 0) + src.shape[0], max(shift_x, 0): max(shift_x, 0) + src.shape[1]] = src
    return out | inside


def _cracks(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, h: int, w: int) -> np.ndarray:
    """Whether each pixel ``(y, x)`` lies on one of a few straight hairline fractures of an h×w frame."""
    out = np.zeros(x.shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        angle = rng.uniform(0.0, np.pi)
        py, px = rng.uniform(0.0, h), rng.uniform(0.0, w)
        out |= np.abs((x - px) * np.sin(angle) - (y - py) * np.cos(angle)) < 0.7
    return out


def _voronoi(points: np.ndarray, h: int, w: int) -> np.ndarray:
    """Index of the nearest point for every pixel; a running minimum beats argmin over a stack."""
    dy2 = (np.arange(h, dtype=np.float32)[None] - points[:, :1]) ** 2
    dx2 = (np.arange(w, dtype=np.float32)[None] - points[:, 1:]) ** 2
    best = dy2[0][:, None] + dx2[0][None]
    nearest = np.zeros((h, w), np.intp)
    for k in range(1, len(points)):
        d = dy2[k][:, None] + dx2[k][None]
        nearest[d < best] = k
        np.minimum(best, d, out=best)
    return nearest


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose right or lower neighbour has a different value: one-pixel borders."""
    out = np.zeros(labels.shape, bool)
    out[:, :-1] = labels[:, :-1] != labels[:, 1:]
    out[:-1] |= labels[:-1] != labels[1:]
    return out


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Value noise: a coarse Gaussian grid interpolated smoothly to ``(h, w)``, roughly unit variance."""
    grid = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    return _interp_weights(h, cells) @ grid @ _interp_weights(w, cells).T


@functools.lru_cache(maxsize=64)
def _interp_weights(n: int, cells: int) -> np.ndarray:
    """(n, cells + 1) matrix that interpolates a coarse axis to n samples with smoothstep weights."""
    pos = np.linspace(0.0, cells, n, dtype=np.float32)
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = pos - i0
    t = t * t * (3.0 - 2.0 * t)  # smoothstep hides the grid lines plain linear interpolation shows
    weights = np.zeros((n, cells + 1), np.float32)
    weights[np.arange(n), i0] = 1.0 - t
    weights[np.arange(n), i0 + 1] = t
    weights.flags.writeable = False
    return weights


def _noise(rng: np.random.Generator, sigma: float, shape: tuple[int, ...]) -> np.ndarray:
    return sigma * rng.standard_normal(shape, dtype=np.float32)


def _unit(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)], np.float32)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"Expected size as (height, width). Received: size={size!r}.") from None
    if h < 8 or w < 8:
        raise ValueError(f"Expected size (height, width) with each >= 8. Received: size={size!r}.")
    return h, w
