"""Labelled concepts for compositional explanations (Mu & Andreas, NeurIPS 2020).

A compositional explanation describes a unit by a logical formula over concepts
whose mask matches where the unit fires. Concepts come as *label maps* (concept
numbers per pixel, 0 = none; several maps, as a pixel can carry several concepts)
and image-level concept numbers. :class:`Broden` reads the Broden data set as the
reference code does (:class:`BrodenImages`: its images for the model);
:class:`FashionConcepts` derives concepts from Fashion-MNIST pixels by a fixed rule.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .common import BadImageError, _digest


class Concepts:
    """Concept label maps of probe images.

    Attributes
    ----------
    names : tuple of str
        Concept number -> readable name; ``names[0] == ""`` (0 = no concept), unused numbers ``""``.
    categories : tuple of str
        Concept number -> its category (``"object"``, ``"part"``, ``"scene"``, ...), ``""`` where unused.
    mask_size : tuple of int
        ``(h, w)`` of every label map.
    """

    names: tuple = ("",)
    categories: tuple = ("",)
    mask_size: tuple = (0, 0)

    def __len__(self) -> int:  # number of probe images
        raise NotImplementedError

    def labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Label maps of probe image ``i``.

        Returns
        -------
        pixel : ndarray of shape (L, h, w), int32
            ``L >= 0`` label maps of concept numbers, 0 = none.
        image : ndarray of shape (k,), int32
            Image-level concept numbers (they cover the whole image).
        """
        raise NotImplementedError

    def identity(self) -> dict:
        """What the concepts are made from, JSON-serialisable and cheap (for provenance)."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Where probe image ``i`` comes from."""
        raise NotImplementedError

    def number(self, name: str) -> int:
        """The concept number of ``name``; ValueError listing close matches when it is unknown."""
        if name and name in self.names:
            return self.names.index(name)
        close = difflib.get_close_matches(str(name), [n for n in self.names if n], n=5)
        raise ValueError(f"concept name {name!r} is unknown; close matches: {close or 'none'}. "
                         "See .names for all concept names.")


def read_csv(path: Path, required: tuple, fix: str = "use the Broden release's file") -> list[dict]:
    """The rows of one of Broden's CSV files, refused (naming ``fix``) when missing or lacking a column."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a Broden folder holds index.csv, label.csv and images/; "
                                f"{fix}.")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, found = list(reader), reader.fieldnames or []
    missing = [c for c in required if c not in found]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing} (columns found: {found}); "
                         f"it needs {list(required)}: {fix}.")
    return rows


def _resize_nearest(m: np.ndarray, size: tuple) -> np.ndarray:
    """Nearest-neighbour resize of an int32 label map (h, w) to ``size`` (PIL's ``NEAREST``)."""
    if m.shape == tuple(size):
        return m
    return np.asarray(Image.fromarray(m.astype(np.int32)).resize(size[::-1], Image.NEAREST), dtype=np.int32)


class Broden(Concepts):
    """The Broden data set: concept masks of images from ADE20K, Pascal, OpenSurfaces, DTD, ...

    Parameters
    ----------
    root : path
        Folder with ``index.csv``, ``label.csv`` and ``images/``.
    subset : str or None
        First path component of the images to keep (``"ade20k"``, ``"pascal"``, ...); None: all.
    categories : sequence of str
        Categories to read, in this order: ``color, object, part, material`` (pixel level, one map
        per mask file; the label of a pixel is ``R + 256 * G`` of its RGB PNG) and ``scene, texture``
        (image level). Material is left out by default, as in the reference results.
    mask_size : (h, w) or None
        Size of the label maps; masks of another size are resized (nearest neighbour). Default: the
        common ``(sh, sw)`` of the selected rows.
    """

    PIXEL, IMAGE = ("color", "object", "part", "material"), ("scene", "texture")
    INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw") + PIXEL + IMAGE

    def __init__(self, root, subset: str | None = "ade20k",
                 categories=("object", "part", "scene", "texture", "color"), mask_size=None):
        self.root, self.subset, self.categories_read = Path(root).expanduser(), subset, tuple(categories)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root={str(root)!r} does not exist; give the Broden folder "
                                    "(the one holding index.csv, label.csv and images/).")
        bad = [c for c in self.categories_read if c not in self.PIXEL + self.IMAGE]
        if bad:
            raise ValueError(f"categories={list(categories)!r}: {bad} unknown; "
                             f"use some of {list(self.PIXEL + self.IMAGE)}.")
        rows = read_csv(self.root / "index.csv", self.INDEX_COLUMNS)
        labels = read_csv(self.root / "label.csv", ("number", "name", "category"))
        try:
            numbers = [int(r["number"]) for r in labels]
        except ValueError as e:
            raise ValueError(f"{self.root / 'label.csv'}: a label number is not an integer ({e}).") from None
        names, cats = [""] * (max(numbers, default=0) + 1), [""] * (max(numbers, default=0) + 1)
        for k, r in zip(numbers, labels):  # category "object(10);part(3)": the first one listed
            names[k], cats[k] = r["name"], (r["category"] or "").split(";")[0].split("(")[0].strip()
        self.names, self.categories = tuple(names), tuple(cats)
        self._known = np.array([k == 0 or bool(n) for k, n in enumerate(names)])
        present = sorted({r["image"].split("/")[0] for r in rows})
        self.rows = rows if subset is None else [r for r in rows if r["image"].split("/")[0] == subset]
        if not self.rows:
            raise ValueError(f"subset={subset!r} has no rows in {self.root / 'index.csv'}; "
                             f"subsets present: {present} (or subset=None for all).")
        sizes = sorted({(int(r["sh"]), int(r["sw"])) for r in self.rows})
        if mask_size is None and len(sizes) > 1:
            raise ValueError(f"the selected rows have masks of several sizes {sizes}; give mask_size=(h, w) "
                             "to resize them to one size, or choose one subset.")
        self.mask_size = tuple(int(s) for s in (mask_size or sizes[0]))

    def __len__(self) -> int:
        return len(self.rows)

    def identity(self) -> dict:
        """Root, subset, categories, mask size, rows, and digests of ``index.csv`` and ``label.csv``."""
        sha = {f"{n}_sha256": hashlib.sha256((self.root / f"{n}.csv").read_bytes()).hexdigest()[:16]
               for n in ("index", "label")}
        return {"kind": "broden", "root": str(self.root.resolve()), "subset": self.subset,
                "categories": list(self.categories_read), "mask_size": list(self.mask_size),
                "rows": len(self.rows), **sha}

    def describe(self, i: int) -> str:
        return str(self.root / "images" / self.rows[i]["image"])

    def _check(self, values: np.ndarray, where: str) -> None:
        bad = (values < 0) | (values >= len(self._known))
        bad[~bad] = ~self._known[values[~bad]]
        if bad.any():
            raise ValueError(f"label number {int(values[bad].flat[0])} in {where} is not in "
                             f"{self.root / 'label.csv'}: the label.csv does not match the masks; "
                             "use the label.csv of the same Broden release.")

    def _mask(self, i: int, name: str) -> np.ndarray:
        path = self.root / "images" / name
        if not path.is_file():
            raise FileNotFoundError(f"mask file {path} of image {i} ({self.rows[i]['image']}) does not exist; "
                                    "the Broden folder is incomplete: unpack the release again.")
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int32)
        m = rgb[..., 0] + 256 * rgb[..., 1]
        self._check(m, f"mask file {path}")
        return _resize_nearest(m, self.mask_size)

    def labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Pixel maps (one per mask file, categories in the order given) and image-level numbers."""
        row, pixel, image = self.rows[i], [], []
        for c in self.categories_read:
            items = [s.strip() for s in (row[c] or "").split(";") if s.strip()]
            if c in self.PIXEL:
                pixel += [self._mask(i, s) for s in items]
                continue
            try:
                image += [int(s) for s in items]
            except ValueError:
                raise ValueError(f"{c}={row[c]!r} of row {row['image']} in {self.root / 'index.csv'} is "
                                 "not a ';'-joined list of label numbers; fix the row.") from None
        image = np.asarray(image, dtype=np.int32)
        self._check(image, f"the scene/texture of row {row['image']} in index.csv")
        return (np.stack(pixel).astype(np.int32) if pixel else np.zeros((0, *self.mask_size), np.int32)), image


class BrodenImages(Dataset):
    """The probe images of a :class:`Broden` for the model: ``(tensor (3, H, W) float32, 0)``.

    Each image is resized (not cropped: the masks stay aligned) to the ``crop_size`` of ``preset``
    (a torchvision ``ImageClassification`` transform; default AlexNet's), scaled to [0, 1] and
    normalised with the preset's ``mean`` and ``std``.
    """

    classes = ("broden",)

    def __init__(self, broden: Broden, preset=None):
        from torchvision.models import AlexNet_Weights

        self.broden, self.transform = broden, preset or AlexNet_Weights.IMAGENET1K_V1.transforms()
        crop = list(self.transform.crop_size)  # [224] or [h, w]
        self.input_shape = (3, crop[0], crop[-1])
        self.mean, self.std = (torch.tensor(v, dtype=torch.float32).view(3, 1, 1)
                               for v in (self.transform.mean, self.transform.std))

    def __len__(self):
        return len(self.broden)

    def identity(self) -> dict:
        t = self.transform
        return {**self.broden.identity(), "kind": "broden_images",
                "preprocessing": f"resize to {list(self.input_shape[1:])} (no crop), {t.interpolation}, "
                                 f"mean {list(t.mean)}, std {list(t.std)}"}

    def describe(self, i) -> str:
        return self.broden.describe(i)

    def display(self, i) -> np.ndarray:
        """Image ``i`` resized as the model sees it, ``uint8`` (H, W, 3)."""
        from torchvision.transforms.v2 import functional as F

        try:
            image = F.resize(Image.open(self.describe(i)).convert("RGB"), list(self.input_shape[1:]),
                             interpolation=self.transform.interpolation, antialias=True)
        except Exception as e:  # missing, truncated, not an image: all name the file
            raise BadImageError(
                f"image {i} ({self.describe(i)}) cannot be read ({type(e).__name__}: {e}); replace or "
                "delete it, or set skip_bad_images=True to skip unreadable images (the artifacts "
                "list them).") from e
        return np.asarray(image, dtype=np.uint8)

    def __getitem__(self, i):
        x = torch.from_numpy(self.display(i).copy()).permute(2, 0, 1).float() / 255.0
        return (x - self.mean) / self.std, 0


def _window_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the 3 x 3 window of each pixel of ``a`` (n, h, w), zeros outside."""
    p, (h, w) = np.pad(a, ((0, 0), (1, 1), (1, 1))), a.shape[1:]
    return sum(p[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))


class FashionConcepts(Concepts):
    """Concepts of grey-level garment images by a fixed annotator (a pure function of pixels and label).

    Parameters
    ----------
    images : ndarray of shape (n, h, w), uint8
    labels : ndarray of shape (n,), ints in ``range(len(classes))``
    classes : sequence of str
        Class names; the image-level (``scene``) concept of an image is its class, lower case with
        every run of non-alphanumerics as ``_`` (``"T-shirt/top"`` -> ``t_shirt_top``).

    Notes
    -----
    Seven maps per image (mask size = image size), thresholds on the raw 0-255 intensity ``x``:

    0. object: ``garment`` where ``x > 25`` (10 % of 255; the background is 0 with faint noise),
       ``background`` elsewhere;
    1. color, garment pixels in bands ``dark`` (26-100), ``mid_tone`` (101-180), ``bright`` (181-255):
       about a fifth, a third and a half of the garment pixels of the test images;
    2. part: ``top``/``middle``/``bottom`` thirds of the rows of the garment's bounding box and
    3. ``left``/``centre``/``right`` thirds of its columns (garment pixels only);
    4. part: ``outline``, garment pixels with a background 4-neighbour or on the image border;
    5. edge, where the Sobel gradient magnitude of ``x / 255`` (border replicated) exceeds 1, a quarter
       of a black-to-white step's: named by the orientation of the edge *line* (perpendicular to
       the gradient), ``edge_vertical`` for a gradient within 22.5 degrees of horizontal,
       ``edge_horizontal`` within 22.5 degrees of vertical, ``edge_diagonal`` otherwise;
    6. texture: standard deviation of the garment pixels of a garment pixel's 3 x 3 window
       (background left out: the silhouette is no texture), ``textured`` above 20, else ``smooth``
       (about half and half).
    """

    VERSION = "fashion-concepts-1"
    GARMENT, DARK, MID, EDGE, TEXTURE = 25, 100, 180, 1.0, 20.0
    CONCEPTS = (("object", ("garment", "background")), ("color", ("dark", "mid_tone", "bright")),
                ("part", ("top", "middle", "bottom", "left", "centre", "right", "outline")),
                ("edge", ("edge_horizontal", "edge_vertical", "edge_diagonal")),
                ("texture", ("textured", "smooth")))

    def __init__(self, images, labels, classes, name: str = "images", indices=None):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"images of shape {images.shape} and dtype {images.dtype}: give a uint8 "
                             "array of shape (n, h, w), e.g. fashion_mnist('test').images[indices].")
        if labels.shape != images.shape[:1] or not np.isin(labels, np.arange(len(classes))).all():
            raise ValueError(f"labels of shape {labels.shape} must hold one class number in "
                             f"range({len(classes)}) per image ({len(images)} images).")
        scene = [re.sub(r"[^a-z0-9]+", "_", str(c).lower()).strip("_") for c in classes]
        pairs = [(n, cat) for cat, ns in self.CONCEPTS for n in ns] + [(n, "scene") for n in scene]
        if len({n for n, _ in pairs}) != len(pairs) or "" in scene:
            raise ValueError(f"classes={list(classes)} give the concept names {scene}, empty or clashing "
                             "with each other or the pixel concepts; rename the classes.")
        self.names, self.categories = ("", *(n for n, _ in pairs)), ("", *(c for _, c in pairs))
        self.classes, self.name, self.indices = tuple(classes), name, indices
        self.images, self.targets, self.mask_size = images, labels.astype(np.int64), tuple(images.shape[1:])
        self._scene = np.array([self.number(n) for n in scene], dtype=np.int32)
        self.maps = self._annotate(images)  # uint8 (n, 7, h, w)
        self._identity = None

    @classmethod
    def of(cls, dataset, indices=None) -> FashionConcepts:
        """Concepts of ``dataset.images[indices]`` for an :class:`helpers.images.ArrayImages`."""
        indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
        return cls(dataset.images[indices], dataset.labels.numpy()[indices], dataset.classes,
                   name=getattr(dataset, "name", "images"), indices=indices)

    def _annotate(self, images: np.ndarray) -> np.ndarray:
        (n, h, w), k = images.shape, {name: np.uint8(self.number(name)) for name in self.names[1:]}
        x, g = images.astype(np.float32), images > self.GARMENT
        out = np.zeros((n, 7, h, w), np.uint8)
        out[:, 0] = np.where(g, k["garment"], k["background"])
        out[:, 1] = g * np.where(images <= self.DARK, k["dark"],
                                 np.where(images <= self.MID, k["mid_tone"], k["bright"]))
        for m, thirds in ((2, ("top", "middle", "bottom")), (3, ("left", "centre", "right"))):
            hit = g.any(axis=4 - m)  # (n, h) rows or (n, w) columns holding garment pixels
            first, last = hit.argmax(1), hit.shape[1] - 1 - hit[:, ::-1].argmax(1)
            pos = np.arange(hit.shape[1])[None, :] - first[:, None]
            third = np.array([k[t] for t in thirds])[np.clip(3 * pos // (last - first + 1)[:, None], 0, 2)]
            out[:, m] = g * (third[:, :, None] if m == 2 else third[:, None, :])
        p = np.pad(g, ((0, 0), (1, 1), (1, 1)))
        out[:, 4] = (g & ~(p[:, :-2, 1:-1] & p[:, 2:, 1:-1] & p[:, 1:-1, :-2] & p[:, 1:-1, 2:])) * k["outline"]
        f = np.pad(x / 255.0, ((0, 0), (1, 1), (1, 1)), mode="edge")
        s = {(dy, dx): f[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)}
        gx = s[0, 2] + 2 * s[1, 2] + s[2, 2] - s[0, 0] - 2 * s[1, 0] - s[2, 0]
        gy = s[2, 0] + 2 * s[2, 1] + s[2, 2] - s[0, 0] - 2 * s[0, 1] - s[0, 2]
        angle = np.degrees(np.arctan2(gy, gx)) % 180  # of the gradient, 0 = horizontal
        line = np.where((angle < 22.5) | (angle >= 157.5), k["edge_vertical"],
                        np.where((angle >= 67.5) & (angle < 112.5), k["edge_horizontal"], k["edge_diagonal"]))
        out[:, 5] = (np.hypot(gx, gy) > self.EDGE) * line
        count, gf = np.maximum(_window_sum(g.astype(np.float32)), 1), g.astype(np.float32)
        mean = _window_sum(x * gf) / count
        std = np.sqrt(np.maximum(_window_sum(x * x * gf) / count - mean ** 2, 0))
        out[:, 6] = g * np.where(std > self.TEXTURE, k["textured"], k["smooth"])
        return out

    def __len__(self) -> int:
        return len(self.images)

    def labels(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The seven maps of image ``i`` (see the class notes), int32 (7, h, w), and its class concept (1,)."""
        return self.maps[i].astype(np.int32), self._scene[self.targets[i]:self.targets[i] + 1].copy()

    def identity(self) -> dict:
        """Kind, count, annotator version and a digest of pixels, labels and classes."""
        if self._identity is None:
            self._identity = {"kind": "fashion_concepts", "n": len(self), "version": self.VERSION,
                              "sha256": _digest(np.ascontiguousarray(self.images).tobytes(),
                                                self.targets.tobytes(), *self.classes)}
        return self._identity

    def describe(self, i: int) -> str:
        j = i if self.indices is None else int(self.indices[i])
        return f"{self.name} image {j} ({self.classes[self.targets[i]]})"
