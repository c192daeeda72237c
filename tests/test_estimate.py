"""The cost of a run before it starts (helpers/estimate.py, helpers/pipeline/costs.py): the scale it is computed
from against what a run records, each step's disk estimate against the bytes a run wrote, the arithmetic."""
import json

import pytest
import torch

from helpers import estimate
from helpers.models.registry import architecture
from helpers.pipeline import provenance
from helpers.pipeline.costs import DISK_MARGIN, DISK_SLACK, Cost, Rates, duration, human, npy_bytes


def test_the_scale_is_what_the_run_recorded(smoke):
    """Shapes, ReLUs and image counts without reading an image, against the sample's sidecar; the model's bytes
    against its parameters."""
    s = estimate.scale(smoke)
    meta = json.loads((smoke.artifact("sample") / "meta.json").read_text())
    assert {k: list(v) for k, v in s.shapes.items()} == meta["shapes"]
    assert s.relu == {k: v["relu"] for k, v in meta["sites"].items()}
    assert s.images["sample"] == meta["inputs"]["images"]["n"] == smoke.n_sample
    index = json.loads((smoke.artifact("index") / "meta.json").read_text())
    assert s.images["eval"] == index["inputs"]["images"]["n"]
    assert s.images["probe"] == smoke.n_probe and s.map_layers == ("conv1", "conv2", "conv3", "conv4", "conv5")
    model = architecture(smoke.model)
    assert s.param_bytes == sum(t.numel() * 4 for t in model.state_dict().values())
    assert s.input_shape == (1, 28, 28) and s.forward_bytes > 0


def test_each_artifacts_disk_estimate_is_within_its_margin_of_the_bytes_written(smoke):
    """Every basis (ICA, NMF, SAE, random too), grey grids and stimuli, the machine scores, 08's masks."""
    s = estimate.scale(smoke)
    report = {}
    for artifact in provenance.artifacts():
        cost = provenance.cost(smoke, artifact, s)
        if cost is None:  # the stand-in's training: no estimate
            continue
        wrote = sum(f.stat().st_size for f in smoke.artifact(artifact).rglob("*") if f.is_file())
        report[artifact] = (cost.disk, wrote)
    print(report)
    assert set(report) == set(provenance.artifacts()) - {"model"}
    assert [a for a, (e, w) in report.items() if abs(e - w) > max(DISK_MARGIN * w, DISK_SLACK)] == []


def test_costs_count_only_what_a_run_would_write(smoke):
    """A current artifact is reused: its step writes nothing."""
    assert all(c.disk == 0 and not c.work for c in estimate.costs(smoke, list(provenance.notebooks())).values())


def test_adding_costs_is_doing_the_steps_in_turn():
    a = Cost(disk=10, host=5, device=1, work={"images": 3}, note="x", scratch=4)
    b = Cost(disk=1, host=7, device=0, work={"images": 1, "flop64": 2}, note="x", scratch=9)
    c = a + b
    assert (c.disk, c.host, c.device, c.scratch, c.note) == (11, 7, 1, 9, "x")
    assert c.work == {"images": 4, "flop64": 2}
    rates = Rates(images=2, forwards=1, flop64=4, flop32=1, eigh=1, bits=1)
    assert rates.seconds(c.work) == pytest.approx(4 / 2 + 2 / 4)


def test_sizes_and_durations_read_as_people_write_them(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((12, 64), np.float32))
    assert npy_bytes(12, 64) == (tmp_path / "x.npy").stat().st_size
    assert human(1536) == "1.5 KiB" and human(512) == "512 B" and human(3 * 2**30) == "3.0 GiB"
    assert duration(42) == "42 s" and duration(600) == "10 min" and duration(5 * 3600) == "5.0 h"


def test_the_calibration_measures_the_device_in_seconds(smoke):
    rates, info = estimate.calibrate(smoke, estimate.scale(smoke))
    assert all(v > 0 for v in (rates.images, rates.forwards, rates.flop64, rates.flop32, rates.eigh, rates.bits))
    assert rates.images <= rates.forwards and info["seconds"] < 30
    assert ("cpu" in info["device"]) != torch.cuda.is_available()
    assert info["loading"].endswith(f"({2 * smoke.batch_size} images, 0 workers)")
