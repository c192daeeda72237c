"""What a step costs before it runs: the bytes it writes, the memory it holds, the work it does.

Each step declares a cost function with its artifact (:func:`helpers.pipeline.provenance.declare`,
``cost=``): ``cost(p, scale) -> Cost``, from the profile's settings and the run's :class:`Scale` (the
layers' shapes, the images of each split, the model's size). The work is counted in units a short
calibration on the user's own device turns into seconds (:class:`Rates`; :mod:`helpers.estimate`
measures them): images loaded and forwarded, forward passes of images already loaded, floating-point
operations of dense products, eigensolves, bytes of mask arithmetic. The numbers are estimates: the
disk within the margin the tests check against a tiny run (:data:`DISK_MARGIN`), the memory and the
time projections.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

DISK_MARGIN = 0.5
"""The dry run's disk estimate of a step is within this share of the bytes a run writes (checked by the tests
on a tiny paper-profile run), or within :data:`DISK_SLACK` bytes for small artifacts."""

DISK_SLACK = 256 * 1024
"""Bytes an estimate may be off by whatever the artifact's size: sidecars, CSV rows, PNG headers."""

PNG_RATIO = {1: 0.25, 3: 0.5}
"""Bytes of a PNG per byte of its raw pixels, assumed for grids and stimuli, by channels: grey Fashion-MNIST
patches (dark backgrounds, white gaps) and upscaled colour patches compress to about these shares."""


@dataclass(frozen=True)
class Scale:
    """What the cost of every step is computed from, measured once per run (:func:`helpers.estimate.scale`).

    Attributes
    ----------
    shapes : dict
        ``{layer: shape}`` of each studied layer's output as read: ``(C, H, W)`` for a map, ``(D,)`` for a vector.
    images : dict
        ``{"sample": n, "eval": n, "ablation": n, "probe": n}``: the images each kind of step reads.
    input_shape : tuple
        ``(C, H, W)`` of one preprocessed image.
    param_bytes : int
        Bytes of the model's parameters and buffers.
    forward_bytes : int
        Peak bytes of the activations one image's forward pass holds at once (largest input + output of a
        module), the unit of the memory estimates.
    relu : dict
        ``{layer: bool}``: a ReLU takes the layer's output next (it has post-ReLU statistics).
    map_layers : tuple
        The layers whose output is a spatial map (08 explains only these).
    mask_side : int
        Side of 08's concept masks.
    input_dtype : str
        The input's dtype (``"float32"`` for images, ``"int64"`` for token ids).
    """

    shapes: dict
    images: dict
    input_shape: tuple
    param_bytes: int
    forward_bytes: int
    relu: dict = field(default_factory=dict)
    map_layers: tuple = ()
    mask_side: int = 112
    input_dtype: str = "float32"

    def d(self, layer: str) -> int:
        """The layer's dimension (channels of a map)."""
        return int(self.shapes[layer][0])

    def positions(self, layer: str) -> int:
        """Positions per image of a layer: ``H * W`` for a map, 1 for a vector."""
        shape = self.shapes[layer]
        return int(shape[1] * shape[2]) if len(shape) == 3 else 1


@dataclass
class Cost:
    """A step's cost: the bytes its artifact holds (``disk``) and the scratch files it needs meanwhile
    (``scratch``, the largest at once), peak host and device memory in bytes, and its work in units of
    :class:`Rates` (``{"images": n, "flop64": f, ...}``). Adding two costs is doing both in turn."""

    disk: int = 0
    host: int = 0
    device: int = 0
    work: dict = field(default_factory=dict)
    note: str = ""
    scratch: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        work = dict(self.work)
        for k, v in other.work.items():
            work[k] = work.get(k, 0) + v
        return Cost(self.disk + other.disk, max(self.host, other.host), max(self.device, other.device), work,
                    "; ".join(dict.fromkeys(n for n in (self.note, other.note) if n)),
                    max(self.scratch, other.scratch))


@dataclass(frozen=True)
class Rates:
    """Rates of the user's device, from a short calibration (:func:`helpers.estimate.calibrate`).

    ``images``: images/s loaded, preprocessed and forwarded (the slower of the loader and the forward pass);
    ``forwards``: images/s of the forward pass alone; ``flop64``/``flop32``: dense products' FLOP/s in float64
    and float32; ``eigh``: ``d**3`` per second of a symmetric eigensolve; ``bits``: bytes/s of boolean mask
    arithmetic (AND, count).
    """

    images: float
    forwards: float
    flop64: float
    flop32: float
    eigh: float
    bits: float

    def seconds(self, work: dict) -> float:
        """The seconds a step's ``work`` takes at these rates."""
        return sum(amount / getattr(self, unit) for unit, amount in work.items() if amount)


def png_bytes(height: int, width: int, channels: int) -> int:
    """Estimated bytes of a PNG of this size (:data:`PNG_RATIO` of its raw pixels, plus its header)."""
    return int(PNG_RATIO.get(channels, 0.5) * height * width * channels) + 200


def npy_bytes(*shape, itemsize: int = 4) -> int:
    """Bytes of a ``.npy`` file of this shape (its 128-byte header included)."""
    return int(math.prod(shape)) * itemsize + 128


def human(n: float, unit: str = "B") -> str:
    """``1536 -> "1.5 KiB"``: bytes in binary units."""
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(n) < 1024 or prefix == "Ti":
            return f"{n:,.0f} {prefix}{unit}" if not prefix else f"{n:,.1f} {prefix}{unit}"
        n /= 1024
    return f"{n:.1f} Ti{unit}"


def duration(seconds: float) -> str:
    """``5400 -> "1.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
