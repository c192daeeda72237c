import gzip

import numpy as np
import pytest
import torch

from helpers import images, models
from helpers.images import fashion
from helpers.pipeline.settings import load_profile


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_read_idx_roundtrip(tmp_path, name):
    array = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3))
    _write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(images.read_idx(tmp_path / name), array)


def test_truncated_idx_is_a_clear_error(tmp_path):
    _write_idx(tmp_path / "x", np.zeros((5, 4, 3)))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        images.read_idx(tmp_path / "x")


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 4)):
        stem, labels = fashion.FASHION_FILES[split]
        _write_idx(tmp_path / f"{stem}.gz", rng.integers(0, 256, size=(n, 28, 28)))
        _write_idx(tmp_path / labels, rng.integers(0, 10, size=n))
    ds = images.fashion_mnist("test", dirs=[tmp_path], download=False)
    x, y = ds[0]
    assert len(ds) == 4 and x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert ds.display(0).shape == (28, 28, 1) and ds.display(0).dtype == np.uint8


def test_fashion_mnist_system_copy_has_the_standard_splits():
    p = load_profile("quick")
    train, test = models.load_dataset(p, "train"), models.load_dataset(p, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert sorted(set(test.labels.tolist())) == list(range(10))


def test_missing_fashion_mnist_names_three_ways(tmp_path, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(FileNotFoundError) as e:
        images.fashion_mnist("train", dirs=[tmp_path / "none", tmp_path / "raw"])
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "raw") in msg
    assert "download" in msg and "Error downloading" in msg


def test_image_folder_errors(tmp_path, tiny_imagenet):
    with pytest.raises(ValueError, match="data_root is not set.*make paper IMAGENET="):
        images.image_folder(None, "train")
    with pytest.raises(FileNotFoundError, match="does not exist; give the folder holding train/ and val/"):
        images.image_folder(tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match=r"val does not exist \(found folders \['train'\]\)"):
        (tmp_path / "only_train" / "train").mkdir(parents=True)
        images.image_folder(tmp_path / "only_train", "val")
    (tmp_path / "flat" / "val").mkdir(parents=True)
    (tmp_path / "flat" / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no class folders"):
        images.image_folder(tmp_path / "flat", "val")


def test_image_folder_uses_standard_preprocessing(tiny_imagenet):
    ds = images.image_folder(tiny_imagenet, "val")
    x, y = ds[0]
    assert x.shape == (3, 224, 224) and ds.classes[0] == "n01440764" and y == 0
    assert ds.display(0).shape == (224, 224, 3)
    # normalised with ImageNet statistics: display -> normalise reproduces the tensor
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    again = (torch.from_numpy(ds.display(0).copy()).permute(2, 0, 1) / 255 - mean[:, None, None]) / std[:, None, None]
    assert (again - x).abs().max() < 0.05  # same crop (uint8 rounding aside)


def test_select_is_seeded_sorted_and_complete_when_asked():
    a, b = images.select(100, 10, seed=0), images.select(100, 10, seed=0)
    np.testing.assert_array_equal(a, b)
    assert (np.diff(a) > 0).all() and not np.array_equal(a, images.select(100, 10, seed=1))
    np.testing.assert_array_equal(images.select(5, None, 0), np.arange(5))


def test_a_truncated_jpeg_is_named_by_path_and_index(broken_imagenet):
    root, victim = broken_imagenet
    ds = images.image_folder(root, "val")
    with pytest.raises(images.BadImageError, match=rf"image 1 \({victim}\) cannot be read .*skip_bad_images=True"):
        ds[1]
    with pytest.raises(images.BadImageError, match=rf"image 1 \({victim}\)"):
        ds.display(1)


def test_skipped_images_leave_the_sample_and_are_listed(broken_imagenet, tmp_path):
    import torchvision

    from helpers import sampling
    from helpers.pipeline import keys, store

    key = keys.key({"layers": ["conv1", "fc3"], "images": "broken"}, {}, ())  # one key for every call
    root, victim = broken_imagenet
    ds = images.image_folder(root, "val")
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval()
    with pytest.raises(images.BadImageError, match=str(victim)):
        sampling.sample_activations(net, ds, ["conv1", "fc3"], tmp_path / "s", key, batch_size=4)
    meta = sampling.sample_activations(net, ds, ["conv1", "fc3"], tmp_path / "s", key, batch_size=4, skip_bad=True)
    assert [b["path"] for b in meta["bad_images"]] == [str(victim)]
    X, loc = sampling.open_sample(tmp_path / "s", "conv1")
    assert X.shape == (5, 64) and list(loc[:, 0]) == [0, 2, 3, 4, 5]
    # the same image's vector as in a sample of the readable images alone
    good = sampling.sample_activations(net, ds, ["conv1", "fc3"], tmp_path / "g", key, indices=[0, 2, 3, 4, 5],
                                       batch_size=4)
    Xg, locg = sampling.open_sample(tmp_path / "g", "fc3")
    np.testing.assert_allclose(sampling.open_sample(tmp_path / "s", "fc3")[0], Xg, atol=1e-5)
    assert good["bad_images"] == []
    with pytest.raises(store.StaleArtifactError, match="1 unreadable image.*skip_bad_images is off"):
        sampling.sample_activations(net, ds, ["conv1", "fc3"], tmp_path / "s", key, batch_size=4)


def test_another_folder_with_as_many_images_is_another_dataset(tmp_path, tiny_imagenet, capsys):
    """Before: a sample of another data_root with as many images was reused (the root was not recorded)."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_imagenet, other)
    a, b = images.image_folder(tiny_imagenet, "val"), images.image_folder(other, "val")
    assert len(a) == len(b)
    ka, kb = images.images_key(a), images.images_key(b)
    assert ka["n"] == kb["n"] and ka["dataset"]["root"] != kb["dataset"]["root"]
    import torchvision

    from helpers import sampling

    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval()
    from helpers.pipeline import keys

    first = sampling.sample_activations(net, a, ["fc3"], tmp_path / "s", keys.key({}, {"images": ka}), batch_size=8)
    again = sampling.sample_activations(net, b, ["fc3"], tmp_path / "s", keys.key({}, {"images": kb}),
                                        batch_size=8)  # same count, other root
    assert first["inputs"]["images"]["dataset"]["root"] == str(tiny_imagenet / "val")
    assert again["inputs"]["images"]["dataset"]["root"] == str(other / "val")
    assert f"remaking {tmp_path / 's'}: it was made from images.dataset.root=" in capsys.readouterr().err
    renamed = sorted((other / "val").rglob("*.JPEG"))[0]
    renamed.rename(renamed.with_name("x" + renamed.name))
    c = images.image_folder(other, "val")
    assert images.images_key(c)["dataset"]["files_sha256"] != kb["dataset"]["files_sha256"]


def test_fashion_mnist_identity_is_its_content(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for split, n in (("train", 6), ("test", 4)):
            stem, labels = fashion.FASHION_FILES[split]
            _write_idx(tmp_path / folder / f"{stem}.gz", np.random.default_rng(n).integers(0, 256, size=(n, 28, 28)))
            _write_idx(tmp_path / folder / labels, rng.integers(0, 10, size=n))
    a = images.fashion_mnist("test", dirs=[tmp_path / "a"], download=False).identity()
    b = images.fashion_mnist("test", dirs=[tmp_path / "b"], download=False).identity()
    assert a["n"] == b["n"] == 4 and a["sha256"] != b["sha256"]  # same images, other labels


def test_a_split_the_folder_lacks_is_refused_with_the_fix(tiny_imagenet):
    p = load_profile("smoke", dataset="imagefolder", model="alexnet", data_root=str(tiny_imagenet))
    with pytest.raises(FileNotFoundError, match=r"eval_split='test': .*test does not exist; .* has the splits "
                                                r"\['train', 'val'\]\. Use one of them, e\.g\. -p eval_split=val"):
        models.check_split(p, p.eval_split)
    models.check_split(p, "val")
