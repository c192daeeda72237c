"""Concept label maps: a tiny Broden folder written here, and the Fashion-MNIST annotator."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.images.common import BadImageError
from helpers.images.concepts import Broden, BrodenImages, FashionConcepts
from helpers.images.fashion import FASHION_CLASSES, fashion_mnist, find_fashion_mnist

LABELS = [  # number, name, category
    (1, "black-c", "color(1)"), (2, "wall", "object(2)"), (3, "sky", "object(2);part(1)"),
    (4, "door", "part(1)"), (5, "window", "part(2)"), (6, "street-s", "scene(2)"),
    (7, "striped", "texture(2)"), (8, "dotted", "texture(1)"), (300, "handle", "part(2)"),
]
INDEX_COLUMNS = ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "material", "scene",
                 "texture"]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_mask(path, m):
    """An RGB PNG whose pixel label is R + 256 G."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([m % 256, m // 256, np.zeros_like(m)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.fixture
def broden(tmp_path):
    """A Broden folder: 3 rows (ade20k x2, pascal), 32 x 32 JPEGs, 16 x 16 masks; returns (root, masks)."""
    root = tmp_path / "broden"
    (root / "images").mkdir(parents=True)
    write_csv(root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
              [(k, n, c, 10, 0.1, "") for k, n, c in LABELS])
    rng = np.random.default_rng(0)
    masks = {}

    def mask(name, values):
        m = rng.choice(values, size=(16, 16)).astype(np.int64)
        write_mask(root / "images" / name, m)
        masks[name] = m
        return name

    rows = []
    for k, image in enumerate(["ade20k/ADE_1.jpg", "ade20k/ADE_2.jpg", "pascal/P_1.jpg"]):
        pixels = np.full((32, 32, 3), (200, 100, 50), np.uint8) if k == 0 else \
            rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        (root / "images" / image).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / image, quality=95)
        stem = image[:-4]
        rows.append({"image": image, "split": "train", "ih": 32, "iw": 32, "sh": 16, "sw": 16,
                     "object": mask(f"{stem}_object.png", [0, 2, 3]), "material": "",
                     "color": "", "part": "", "scene": "", "texture": ""})
    rows[0].update(part=mask("ade20k/ADE_1_part_1.png", [0, 4, 300]) + ";" +
                   mask("ade20k/ADE_1_part_2.png", [0, 5, 300]),
                   color=mask("ade20k/ADE_1_color.png", [0, 1]), scene="6")
    rows[1].update(scene="6", texture="7;8")
    rows[2].update(part=mask("pascal/P_1_part.png", [0, 3, 300]), texture="7")
    write_csv(root / "index.csv", INDEX_COLUMNS, [[r[c] for c in INDEX_COLUMNS] for r in rows])
    return root, masks


def rewrite_index(root, change):
    with open(root / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = change(rows)
    header = list(rows[0])
    write_csv(root / "index.csv", header, [[r[c] for c in header] for r in rows])


def test_broden_labels_names_and_subsets(broden):
    root, masks = broden
    b = Broden(root)
    assert len(b) == 2 and b.mask_size == (16, 16)
    pixel, image = b.labels(0)  # object, part x2, (scene), (texture: empty), color
    assert pixel.dtype == np.int32 and pixel.shape == (4, 16, 16)
    for got, name in zip(pixel, ["ADE_1_object", "ADE_1_part_1", "ADE_1_part_2", "ADE_1_color"]):
        np.testing.assert_array_equal(got, masks[f"ade20k/{name}.png"])
    assert (pixel == 300).any()  # the green channel counts
    assert image.dtype == np.int32 and image.tolist() == [6]
    pixel, image = b.labels(1)
    assert pixel.shape == (1, 16, 16) and image.tolist() == [6, 7, 8]
    assert b.describe(1) == str(root / "images" / "ade20k" / "ADE_2.jpg")

    assert len(b.names) == 301 and b.names[0] == "" and b.names[150] == "" and b.names[300] == "handle"
    assert b.categories[3] == "object" and b.categories[300] == "part" and b.categories[6] == "scene"
    assert b.number("street-s") == 6
    with pytest.raises(ValueError, match="'handel' is unknown.*handle"):
        b.number("handel")

    pascal = Broden(root, subset="pascal", categories=("texture", "part"))
    pixel, image = pascal.labels(0)
    assert len(pascal) == 1 and image.tolist() == [7]
    np.testing.assert_array_equal(pixel, masks["pascal/P_1_part.png"][None])
    assert len(Broden(root, subset=None)) == 3
    pixel, image = Broden(root, categories=("scene",)).labels(0)
    assert pixel.shape == (0, 16, 16) and image.tolist() == [6]


def test_broden_mask_size_resizes_nearest(broden):
    root, masks = broden
    for size in [(8, 8), (32, 32), (12, 20)]:
        pixel, _ = Broden(root, categories=("object",), mask_size=size).labels(0)
        m = masks["ade20k/ADE_1_object.png"]
        expected = np.asarray(Image.fromarray(m.astype(np.int32)).resize(size[::-1], Image.NEAREST))
        assert pixel.shape == (1, *size)
        np.testing.assert_array_equal(pixel[0], expected)
    pixel, _ = Broden(root, categories=("object",), mask_size=(32, 32)).labels(0)
    np.testing.assert_array_equal(pixel[0], np.repeat(np.repeat(m, 2, 0), 2, 1))


def test_broden_identity_follows_label_csv(broden):
    root, _ = broden
    before = Broden(root).identity()
    assert before["root"] == str(root.resolve()) and before["rows"] == 2 and before["subset"] == "ade20k"
    assert before["mask_size"] == [16, 16] and len(before["label_sha256"]) == 16
    with open(root / "label.csv", "a") as f:
        f.write("9,floor,object(1),1,0.1,\n")
    after = Broden(root).identity()
    assert after["label_sha256"] != before["label_sha256"] and after["index_sha256"] == before["index_sha256"]


def test_broden_errors(broden, tmp_path):
    root, _ = broden
    with pytest.raises(FileNotFoundError, match="root='.*nowhere' does not exist"):
        Broden(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"\['shape'\] unknown; use some of"):
        Broden(root, categories=("object", "shape"))
    with pytest.raises(ValueError, match=r"subset='dtd' has no rows.*subsets present: \['ade20k', 'pascal'\]"):
        Broden(root, subset="dtd")

    (root / "images" / "ade20k" / "ADE_1_part_2.png").unlink()
    with pytest.raises(FileNotFoundError, match="ADE_1_part_2.png of image 0"):
        Broden(root).labels(0)
    write_mask(root / "images" / "ade20k" / "ADE_1_part_2.png", np.full((16, 16), 77))
    with pytest.raises(ValueError, match="label number 77 in mask file .*ADE_1_part_2.png.*does not match"):
        Broden(root).labels(0)
    Broden(root).labels(1)  # the other rows are fine
    rewrite_index(root, lambda rows: [dict(r, texture="7;99") if r["texture"] == "7;8" else r for r in rows])
    with pytest.raises(ValueError, match="label number 99 in the scene/texture of row ade20k/ADE_2.jpg"):
        Broden(root).labels(1)

    rewrite_index(root, lambda rows: [dict(r, sh="8") if r["image"] == "pascal/P_1.jpg" else r for r in rows])
    with pytest.raises(ValueError, match=r"several sizes \[\(8, 16\), \(16, 16\)\]; give mask_size"):
        Broden(root, subset=None)
    rewrite_index(root, lambda rows: [{k: v for k, v in r.items() if k != "scene"} for r in rows])
    with pytest.raises(ValueError, match=r"index.csv lacks the column\(s\) \['scene'\]"):
        Broden(root)
    (root / "index.csv").unlink()
    with pytest.raises(FileNotFoundError, match="index.csv does not exist"):
        Broden(root)


def test_broden_images(broden):
    from torchvision.transforms._presets import ImageClassification

    root, _ = broden
    b = Broden(root)
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    ds = BrodenImages(b, ImageClassification(crop_size=64, mean=mean, std=std))
    assert len(ds) == 2 and ds.input_shape == (3, 64, 64) and ds.classes == ("broden",)
    x, label = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and label == 0
    p = np.asarray(Image.open(root / "images" / "ade20k" / "ADE_1.jpg").convert("RGB"))[5, 5] / 255.0
    np.testing.assert_allclose(x[:, 40, 20].numpy(), (p - mean) / std, atol=1e-5)  # uniform image
    shown = ds.display(1)
    assert shown.shape == (64, 64, 3) and shown.dtype == np.uint8
    np.testing.assert_allclose(ds[1][0].numpy(), ((shown / 255.0 - mean) / std).transpose(2, 0, 1), atol=1e-5)
    assert ds.describe(1).endswith("ADE_2.jpg") and ds.identity()["kind"] == "broden_images"
    assert "64" in ds.identity()["preprocessing"] and ds.identity()["rows"] == 2
    assert BrodenImages(b).input_shape == (3, 224, 224) and BrodenImages(b)[1][0].shape == (3, 224, 224)

    victim = root / "images" / "ade20k" / "ADE_2.jpg"
    victim.write_bytes(victim.read_bytes()[:300])
    with pytest.raises(BadImageError, match="image 1 .*ADE_2.jpg.* cannot be read"):
        ds[1]


def rectangle():
    """Rows 4-15, columns 10-18: a dark, a mid-tone and a bright band of three columns each."""
    x = np.zeros((28, 28), np.uint8)
    x[4:16, 10:13], x[4:16, 13:16], x[4:16, 16:19] = 60, 150, 230
    return x


def test_fashion_concepts_on_a_rectangle():
    c = FashionConcepts(rectangle()[None], [0], FASHION_CLASSES)
    assert len(c) == 1 and c.mask_size == (28, 28)
    pixel, image = c.labels(0)
    assert pixel.dtype == np.int32 and pixel.shape == (7, 28, 28)
    assert image.dtype == np.int32 and image.tolist() == [c.number("t_shirt_top")]
    name = np.array(c.names, dtype=object)
    obj, color, rows, cols, outline, _, texture = (name[p] for p in pixel)
    garment = rectangle() > 0
    assert (obj[garment] == "garment").all() and (obj[~garment] == "background").all()
    assert (color[4:16, 10:13] == "dark").all() and (color[4:16, 13:16] == "mid_tone").all()
    assert (color[4:16, 16:19] == "bright").all() and (color[~garment] == "").all()
    assert (rows[4:8, 10:19] == "top").all() and (rows[8:12, 10:19] == "middle").all()
    assert (rows[12:16, 10:19] == "bottom").all() and (rows[~garment] == "").all()
    assert (cols[4:16, 10:13] == "left").all() and (cols[4:16, 13:16] == "centre").all()
    assert (cols[4:16, 16:19] == "right").all() and (cols[~garment] == "").all()
    ring = garment.copy()
    ring[5:15, 11:18] = False
    assert (outline[ring] == "outline").all() and (outline[~ring] == "").all()
    assert texture[9, 11] == "smooth" and texture[9, 12] == "textured" and texture[9, 14] == "smooth"
    assert (texture[~garment] == "").all()


def test_fashion_edge_orientations():
    x = np.zeros((3, 28, 28), np.uint8)
    x[0, :, 14:] = 255  # a vertical step edge
    x[1, 14:, :] = 255  # a horizontal one
    x[2] = 255 * (np.arange(28)[None, :] > np.arange(28)[:, None])  # a diagonal one
    c = FashionConcepts(x, [1, 2, 3], FASHION_CLASSES)
    edges = [np.array(c.names, dtype=object)[c.labels(i)[0][5]] for i in range(3)]
    assert (edges[0][:, 13:15] == "edge_vertical").all() and (edges[0][:, :12] == "").all()
    assert (edges[0][:, 16:] == "").all()
    assert (edges[1][13:15] == "edge_horizontal").all() and (edges[1][:12] == "").all()
    assert edges[2][10, 10] == "edge_diagonal" and edges[2][20, 5] == ""
    outline = c.labels(0)[0][4] == c.number("outline")
    assert outline[10, 27] and outline[10, 14] and not outline[10, 20]  # border and step count
    assert [c.names[c.labels(i)[1][0]] for i in range(3)] == ["trouser", "pullover", "dress"]


def test_fashion_names_determinism_and_errors():
    x = np.stack([rectangle(), rectangle().T])
    a, b = FashionConcepts(x, [8, 9], FASHION_CLASSES), FashionConcepts(x.copy(), [8, 9], FASHION_CLASSES)
    named = [n for n in a.names if n]
    assert len(set(named)) == len(named) == len(a.names) - 1 == 27 and a.names[0] == ""
    assert a.categories[a.number("ankle_boot")] == "scene" and a.categories[a.number("outline")] == "part"
    assert all(a.categories[1:])
    np.testing.assert_array_equal(a.maps, b.maps)
    assert a.identity() == b.identity() and a.identity()["kind"] == "fashion_concepts"
    x[0, 0, 0] = 1
    assert FashionConcepts(x, [8, 9], FASHION_CLASSES).identity()["sha256"] != a.identity()["sha256"]
    with pytest.raises(ValueError, match="uint8 array of shape"):
        FashionConcepts(x.astype(np.float32), [8, 9], FASHION_CLASSES)
    with pytest.raises(ValueError, match=r"range\(10\)"):
        FashionConcepts(x, [8, 10], FASHION_CLASSES)
    with pytest.raises(ValueError, match="clashing"):
        FashionConcepts(x, [0, 1], ["Top", "top"])
    with pytest.raises(ValueError, match="'sky' is unknown"):
        a.number("sky")


def test_fashion_concepts_on_real_images():
    try:
        find_fashion_mnist(download=False)
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)")
    ds = fashion_mnist("test")
    c = FashionConcepts.of(ds, np.arange(500))
    assert len(c) == 500 and c.describe(7) == f"fashion_mnist/test image 7 ({ds.classes[int(ds.labels[7])]})"
    found = set(np.unique(c.maps).tolist()) | {int(c.labels(i)[1][0]) for i in range(len(c))}
    missing = [n for k, n in enumerate(c.names) if n and k not in found]
    assert not missing, f"concepts never found in 500 test images: {missing}"
    for k in range(7):  # no pixel concept covers its whole map
        for v in np.unique(c.maps[:, k]):
            assert v == 0 or (c.maps[:, k] == v).mean() < 0.6, c.names[v]
    picked = FashionConcepts.of(ds, [5, 7])
    assert picked.describe(1).startswith("fashion_mnist/test image 7")
    np.testing.assert_array_equal(picked.maps[1], c.maps[7])
