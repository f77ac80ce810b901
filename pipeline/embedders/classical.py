"""A weight-free image descriptor: CIELAB colour histograms plus gradient-orientation histograms.

Each image is resized to a fixed working size, then described by

- a joint L*a*b* colour histogram (lightness x red-green x blue-yellow bins; the
  middle a*/b* bins hold neutral greys) over a spatial pyramid (whole image + 2x2),
- a foreground colour histogram: the same bins, each pixel weighted by its colour
  distance (delta E) from the median colour of its row, a simple background model
  for photos whose background changes mainly with height (sky, ground, walls), so
  that the colours of the subject count as much as those of the large background,
- histograms of gradient orientations of the lightness channel weighted by gradient
  magnitude, softly binned into unsigned orientations (HOG-like), over a pyramid
  (whole image + 2x2 + 4x4).

Every cell histogram is L1-normalised and square-rooted (Hellinger), so it has unit
L2 norm; gradient and foreground cells are normalised with a floor so that flat
cells and photos without a distinct subject stay weak. Pyramid levels and the three
groups are weighted, concatenated and the whole vector is L2-normalised: the cosine
of two vectors is a similarity of colour layout, subject colour and edge structure.
numpy and Pillow only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from pipeline.embedders.loader import FileEmbedding
from pipeline.errors import ConfigError
from pipeline.hashing import hash_obj
from pipeline.images import to_rgb

if TYPE_CHECKING:
    from PIL import Image

VERSION = "v1"

# sRGB (D65) -> CIE XYZ, rows divided by the D65 white point so that white maps to (1, 1, 1).
_RGB_TO_XYZN = (
    np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ],
        dtype=np.float64,
    )
    / np.array([[0.95047], [1.0], [1.08883]])
).astype(np.float32)


def _srgb_to_linear_lut() -> np.ndarray:
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


_LINEAR_LUT = _srgb_to_linear_lut()
_EPS = (6 / 29) ** 3


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB array (..., 3) -> float32 CIELAB (..., 3) (D65; L in [0, 100])."""
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (..., 3) RGB array, got {rgb.dtype} {rgb.shape}")
    lin = _LINEAR_LUT[rgb]
    xyz = lin @ _RGB_TO_XYZN.T
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


@dataclass(frozen=True)
class ClassicalParams:
    size: tuple[int, int] = (128, 128)          # working size (width, height); aspect is not kept
    lab_bins: tuple[int, int, int] = (4, 7, 7)  # L*, a*, b* bins (odd a*/b* counts give a neutral middle bin)
    ab_range: float = 56.0                      # a*/b* binned over [-ab_range, ab_range], clipped outside
    colour_levels: tuple[int, ...] = (1, 2)     # spatial pyramid: g x g cells per level
    orientation_bins: int = 12                  # unsigned gradient orientations over [0, pi)
    gradient_levels: tuple[int, ...] = (1, 2, 4)
    gradient_floor: float = 2.0                 # per-pixel gradient mass added to each cell's normaliser
    foreground_delta_e: float = 32.0            # a pixel this far (CIELAB delta E) from its row median counts fully
    foreground_floor: float = 0.02              # share of pixels added to the foreground normaliser
    weights: tuple[float, float, float] = (1.0, 2.0, 1.0)  # shares of the norm: layout colour, foreground colour, gradients

    def validate(self) -> None:
        w, h = self.size
        if w < 8 or h < 8:
            raise ConfigError(f"classical embedder size must be at least 8x8, got {w}x{h}")
        for name, levels in (("colour_levels", self.colour_levels), ("gradient_levels", self.gradient_levels)):
            if not levels or any(g < 1 for g in levels):
                raise ConfigError(f"classical embedder {name} must be positive grid sizes, got {levels}")
            if any(max(levels) % g for g in levels):
                raise ConfigError(f"classical embedder {name} must each divide the finest grid {max(levels)}, got {levels}")
        if min(self.lab_bins) < 1 or self.orientation_bins < 2:
            raise ConfigError("classical embedder needs at least 1 bin per L*a*b* axis and 2 orientation bins")
        if len(self.weights) != 3 or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise ConfigError(f"classical embedder weights must be three non-negative numbers, got {self.weights}")
        if self.foreground_delta_e <= 0:
            raise ConfigError(f"classical embedder foreground_delta_e must be positive, got {self.foreground_delta_e}")


def _cell_map(size: tuple[int, int], grid: int, crop: int) -> np.ndarray:
    """Flat cell index (row-major over a grid x grid layout) of every pixel of the size minus a border of ``crop``."""
    w, h = size
    rows = (np.arange(crop, h - crop) * grid) // h
    cols = (np.arange(crop, w - crop) * grid) // w
    return (rows[:, None] * grid + cols[None, :]).ravel().astype(np.int64)


def _pyramid(finest: np.ndarray, levels: Sequence[int]) -> list[np.ndarray]:
    """Histograms (g, g, bins) of every level, summed from the finest grid."""
    top = finest.shape[0]
    out = []
    for g in levels:
        f = top // g
        out.append(finest.reshape(g, f, g, f, -1).sum(axis=(1, 3)))
    return out


def _hellinger_cells(levels: list[np.ndarray], floors: list[float]) -> list[np.ndarray]:
    """L1-normalise every cell (with a floor), square-root, and weight each level to unit total norm."""
    out = []
    for hist, floor in zip(levels, floors):
        g = hist.shape[0]
        mass = hist.sum(axis=-1, keepdims=True) + floor / (g * g)
        cells = np.sqrt(hist / np.maximum(mass, 1e-12)) / g
        out.append(cells.ravel())
    return out


class ClassicalEmbedder(FileEmbedding):
    """Colour layout, foreground colour and gradient histograms (the lite profile's image embedder, no weights)."""

    has_text_tower = False

    def __init__(
        self, params: ClassicalParams | None = None, *, batch_size: int = 64, num_workers: int = 0, **overrides: Any
    ):
        """``overrides`` set single ``ClassicalParams`` fields, e.g. ``ClassicalEmbedder(orientation_bins=8)``."""
        fields = asdict(params or ClassicalParams())
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(f"classical embedder has no parameter {', '.join(unknown)}; known: {', '.join(fields)}")
        fields.update(overrides)
        params = ClassicalParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        params.validate()
        self.params = params
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.key = f"classical-{VERSION}-{hash_obj(asdict(params), 12)}"
        nl, na, nb = params.lab_bins
        self._n_colour = nl * na * nb
        self.dim = (
            self._n_colour * (1 + sum(g * g for g in params.colour_levels))
            + params.orientation_bins * sum(g * g for g in params.gradient_levels)
        )
        self._colour_grid = max(params.colour_levels)
        self._gradient_grid = max(params.gradient_levels)
        self._colour_cells = _cell_map(params.size, self._colour_grid, 0)
        self._gradient_cells = _cell_map(params.size, self._gradient_grid, 1)
        w, h = params.size
        share = np.asarray(params.weights, dtype=np.float64) / sum(params.weights)
        self._colour_weight = np.sqrt(share[0] / len(params.colour_levels))
        self._foreground_weight = np.sqrt(share[1])
        self._gradient_weight = np.sqrt(share[2] / len(params.gradient_levels))
        self._colour_floors = [0.0] * len(params.colour_levels)
        self._foreground_floor = [params.foreground_floor * w * h]
        self._gradient_floors = [params.gradient_floor * (w - 2) * (h - 2)] * len(params.gradient_levels)

    def settings(self) -> dict[str, Any]:
        return {"kind": "classical", "version": VERSION, **asdict(self.params)}

    def working_pixels(self, image: "Image.Image") -> np.ndarray:
        """The image as a uint8 (height, width, 3) RGB array at the working size."""
        from PIL import Image

        image = to_rgb(image)
        if image.size != self.params.size:
            image = image.resize(self.params.size, Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def _colour_bins(self, lab: np.ndarray) -> np.ndarray:
        """Joint L*a*b* bin of every pixel (flat, row-major)."""
        p = self.params
        nl, na, nb = p.lab_bins
        flat = lab.reshape(-1, 3)
        li = np.clip((flat[:, 0] * (nl / 100.0)).astype(np.int64), 0, nl - 1)
        scale_a = na / (2 * p.ab_range)
        scale_b = nb / (2 * p.ab_range)
        ai = np.clip(np.floor((flat[:, 1] + p.ab_range) * scale_a).astype(np.int64), 0, na - 1)
        bi = np.clip(np.floor((flat[:, 2] + p.ab_range) * scale_b).astype(np.int64), 0, nb - 1)
        return (li * na + ai) * nb + bi

    def _colour_histograms(self, bins: np.ndarray) -> list[np.ndarray]:
        g = self._colour_grid
        finest = np.bincount(self._colour_cells * self._n_colour + bins, minlength=g * g * self._n_colour)
        return _pyramid(finest.astype(np.float32).reshape(g, g, self._n_colour), self.params.colour_levels)

    def _foreground_histogram(self, lab: np.ndarray, bins: np.ndarray) -> list[np.ndarray]:
        width = lab.shape[1]
        rows = np.ascontiguousarray(lab.transpose(0, 2, 1))
        background = np.partition(rows, width // 2, axis=-1)[..., width // 2]
        distance = np.sqrt(((lab - background[:, None, :]) ** 2).sum(axis=-1))
        weight = np.minimum(distance / self.params.foreground_delta_e, 1.0).ravel()
        hist = np.bincount(bins, weights=weight, minlength=self._n_colour)
        return [hist.astype(np.float32).reshape(1, 1, self._n_colour)]

    def _gradient_histograms(self, lightness: np.ndarray) -> list[np.ndarray]:
        nbins = self.params.orientation_bins
        gx = lightness[1:-1, 2:] - lightness[1:-1, :-2]
        gy = lightness[2:, 1:-1] - lightness[:-2, 1:-1]
        mag = np.hypot(gx, gy).ravel()
        pos = (np.arctan2(gy, gx).ravel() % np.pi) * (nbins / np.pi) - 0.5
        lo = np.floor(pos)
        upper_share = (pos - lo).astype(np.float32)
        b0 = lo.astype(np.int64) % nbins
        b1 = (b0 + 1) % nbins
        base = self._gradient_cells * nbins
        g = self._gradient_grid
        n = g * g * nbins
        finest = np.bincount(base + b0, weights=mag * (1.0 - upper_share), minlength=n)
        finest += np.bincount(base + b1, weights=mag * upper_share, minlength=n)
        return _pyramid(finest.reshape(g, g, nbins).astype(np.float32), self.params.gradient_levels)

    def describe(self, pixels: np.ndarray) -> np.ndarray:
        """Descriptor of one working-size uint8 RGB array: float32 (dim,), unit L2 norm."""
        expected = (self.params.size[1], self.params.size[0], 3)
        if pixels.shape != expected:
            raise ValueError(f"expected a working-size array of shape {expected}, got {pixels.shape}")
        lab = srgb_to_lab(pixels)
        bins = self._colour_bins(lab)
        colour = _hellinger_cells(self._colour_histograms(bins), self._colour_floors)
        foreground = _hellinger_cells(self._foreground_histogram(lab, bins), self._foreground_floor)
        gradient = _hellinger_cells(self._gradient_histograms(lab[..., 0]), self._gradient_floors)
        vec = np.concatenate(
            [c * self._colour_weight for c in colour]
            + [f * self._foreground_weight for f in foreground]
            + [g * self._gradient_weight for g in gradient]
        )
        vec = vec.astype(np.float32)
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def _describe_image(self, image: "Image.Image") -> np.ndarray:
        return self.describe(self.working_pixels(image))

    def embed_images(self, images: Sequence["Image.Image"]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for i, image in enumerate(images):
            out[i] = self._describe_image(image)
        return out

    def path_transform(self) -> "Callable[[Image.Image], np.ndarray]":
        return self._describe_image  # descriptors are computed in the decoding threads

    def embed_payloads(self, payloads: list[np.ndarray]) -> np.ndarray:
        return np.stack(payloads)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ConfigError(
            f"the classical image embedder ({self.key}) has no text tower; "
            "use an open_clip image embedder for CLIP text-to-image search"
        )
