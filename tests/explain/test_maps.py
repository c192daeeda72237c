import numpy as np

from helpers import bases, models
from helpers.explain import explanations, maps
from helpers.explain.probe import probe
from helpers.pipeline import distributed, load_profile, provenance


def test_unit_maps_of_two_ranks_equal_one_process(copy, tmp_path):
    p = load_profile("smoke", **copy.params, nproc=2)
    net, info = models.load_model(p, train=False)
    images, indices, _ = probe(p)
    layer = "conv2"
    fitted = bases.layer_bases(p.artifact("bases"), layer, p.bases, provenance.expected(p, "bases"))
    encoders = [("pca", [0, 1, 2]), ("neuron", [5, 0])]
    one = np.lib.format.open_memmap(tmp_path / "one.npy", mode="w+", dtype=np.float32,
                                    shape=(5, len(indices), *_hw(net, images, indices, layer)))
    maps.unit_maps(net, images, indices, layer, [(fitted[b], c) for b, c in encoders], one,
                           batch_size=p.batch_size)
    ranked = np.lib.format.open_memmap(tmp_path / "ranks.npy", mode="w+", dtype=np.float32, shape=one.shape)
    ranked.flush()
    distributed.ranks(p).launch(explanations.unit_maps_rank, key=explanations.explain_key(p, net), layer=layer,
                                encoders=encoders, scratch=str(tmp_path / "ranks.npy"))
    got = np.load(tmp_path / "ranks.npy")
    assert np.abs(one).sum() > 0 and np.array_equal(got, np.asarray(one))


def _hw(net, images, indices, layer):
    from helpers.images.common import example
    from helpers.models.sites import sites

    return sites(net, [layer], example(images, indices))[layer].shape[1:]
