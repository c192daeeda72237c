"""Batches: the chosen images in order, an unreadable one named (or skipped and listed)."""
import pytest
import torch

from helpers import images
from helpers.images import batches
from tests.conftest import RandomImages


def test_batches_yield_the_chosen_images_in_order_with_their_slots():
    ds = RandomImages(n=10, shape=(1, 4, 4))
    got = list(batches.Batches(ds, [7, 2, 5, 9], batch_size=3, start=1))
    assert [s.tolist() for _, _, s in got] == [[1, 2, 3]]
    torch.testing.assert_close(got[0][0], ds.x[[2, 5, 9]])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unreadable_image_stops_with_its_path_or_is_skipped_and_listed(broken_imagenet, workers):
    root, victim = broken_imagenet
    ds = images.image_folder(root, "val")
    with pytest.raises(images.BadImageError, match=rf"image 1 \({victim}\) cannot be read"):
        list(batches.Batches(ds, batch_size=4, num_workers=workers))
    feed = batches.Batches(ds, batch_size=4, skip_bad=True, num_workers=workers)
    slots = torch.cat([s for _, _, s in feed]).tolist()
    assert slots == [0, 2, 3, 4, 5] and feed.next_slot == 6
    assert [(b["slot"], b["index"], b["path"]) for b in feed.bad] == [(1, 1, str(victim))]
    assert "Error" in feed.bad[0]["error"]
