"""08's row type, its table, the units of a layer, their masks, and the examples picked by unit id."""
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import explain
from helpers.explain import maps
from helpers.explain.rows import COLUMNS, TABLE, Unit, read_units, units, write_units


def test_columns_are_the_fields_and_the_table_a_marked_subset():
    assert COLUMNS == ("layer", "basis", "component", "sign", "neuron", "formula", "length", "iou", "primitive",
                       "iou_length1", *(f"iou_max_length_{k}" for k in range(1, 6)), "formula_beam", "iou_beam",
                       "formula_optimal", "iou_optimal", "threshold", "unit_pixels", "top1", "top1_unablated")
    assert TABLE == ("layer", "basis", "component", "sign", "formula", "length", "iou", "iou_length1")
    assert explain.LONGEST == 5 and explain.TABLE == TABLE


def test_units_round_trip_and_a_foreign_header_is_refused(tmp_path):
    rows = [Unit("conv2", "pca", 1, "-", formula="(a AND b)", length=2, iou=0.25, iou_max_length_3=0.5,
                 threshold=1.5, unit_pixels=7, top1=0.5, top1_unablated=0.75),
            Unit("conv2", "neuron", 3, "+", neuron=12)]
    write_units(tmp_path / "units.csv", rows)
    back = read_units(tmp_path / "units.csv")
    assert [[repr(getattr(r, c)) for c in COLUMNS] for r in back] == [[repr(getattr(r, c)) for c in COLUMNS]
                                                                     for r in rows]
    assert back[0].id == ("conv2", "pca", 1, "-")
    assert back[1].neuron == 12 and math.isnan(back[1].iou) and back[1].formula == ""
    (tmp_path / "old.csv").write_text("layer,basis,component,sign\nconv2,pca,1,+\n")
    with pytest.raises(ValueError, match="missing .*neuron.*rerun 08"):
        read_units(tmp_path / "old.csv")


def _basis(k, order=None):
    return SimpleNamespace(components_=np.zeros((k, 4)), order_=np.asarray(order if order is not None else range(k)))


def test_units_of_a_layer_one_per_sign_of_a_signed_basis():
    got = units("conv1", {"pca": _basis(5), "neuron": _basis(4, [3, 0, 2, 1])}, n=2)
    assert [(u.basis, u.component, u.sign, u.neuron) for u in got] == [
        ("pca", 1, "+", -1), ("pca", 1, "-", -1), ("pca", 2, "+", -1), ("pca", 2, "-", -1),
        ("neuron", 1, "+", 3), ("neuron", 2, "+", 0)]
    assert len(units("conv1", {"neuron": _basis(4)}, n=2, all_neurons=True)) == 4
    vectors, at = maps.encoders(got)
    assert vectors == [("pca", [0, 1]), ("neuron", [0, 1])] and at == [0, 0, 1, 1, 2, 3]


def test_unit_masks_threshold_each_units_map_with_its_sign():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    mine = [Unit("l", "pca", 1, "+"), Unit("l", "pca", 1, "-"), Unit("l", "nmf", 1, "+")]
    got = list(maps.unit_masks(m, mine, 0.05, (8, 8)))
    for (thr, pixels), values in zip(got, [m[0], -m[0], m[1]]):
        assert thr == explain.threshold(values, 0.05)
        np.testing.assert_array_equal(pixels, explain.unit_pixels(values, thr, (8, 8)))


def test_examples_are_picked_by_unit_id(tmp_path):
    k, shape = 3, (3, 4, 2, 2)
    np.savez_compressed(tmp_path / "examples_conv3.npz", probe_index=np.arange(12).reshape(k, 4) + 100,
                        image=np.arange(12).reshape(k, 4), mask=np.arange(48).reshape(shape) % 2 == 0,
                        formula_mask=np.zeros(shape, bool), basis=np.array(["pca", "pca", "neuron"]),
                        component=np.array([1, 1, 1]), sign=np.array(["+", "-", "+"]))
    got = explain.examples(tmp_path, Unit("conv3", "pca", 1, "-"))
    assert got["image"].tolist() == [4, 5, 6, 7] and got["probe_index"].tolist() == [104, 105, 106, 107]
    assert got["mask"].shape == (4, 2, 2)
    row = SimpleNamespace(**dataclasses.asdict(Unit("conv3", "neuron", 1, "+")))  # a table row will do
    assert explain.examples(tmp_path, row)["image"].tolist() == [8, 9, 10, 11]
    with pytest.raises(KeyError, match="0 rows"):
        explain.examples(tmp_path, Unit("conv3", "neuron", 2, "+"))
    np.savez_compressed(tmp_path / "examples_conv4.npz", image=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="no unit ids"):
        explain.examples(tmp_path, Unit("conv4", "pca", 1, "+"))
