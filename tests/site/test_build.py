"""The static demo site: its manifest against the artifacts, and the page in headless Chromium
over http.server and from file://."""
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers.bases.fit import load_basis
from helpers.grids.visualize import grid_path
from helpers.pipeline.settings import ROOT, load_profile
from helpers.site import build as site
from tests.study.test_app_browser import chromium, free_port


def export(smoke, out, **changes):
    dirs = {"data_dir": str(smoke.data_path.parent), "figures_dir": str(smoke.figures_path.parent),
            "bases": smoke.bases, **changes}
    return site.export("smoke", out, say=lambda text: None, **dirs), load_profile("smoke", **dirs)


@pytest.fixture(scope="module")
def published(smoke, tmp_path_factory):
    out, p = export(smoke, tmp_path_factory.mktemp("site") / "smoke")
    return out, p, json.loads((out / "manifest.json").read_text())


def test_manifest_agrees_with_the_artifacts(published):
    out, p, manifest = published
    assert (out / "manifest.js").read_text() == f"window.MANIFEST = {json.dumps(manifest, indent=1)};\n"
    (model,) = manifest["models"]
    assert model["name"] == p.model and [l["name"] for l in model["layers"]] == list(p.layers)
    assert model["compositional"] is True
    for layer in model["layers"]:
        assert list(layer["bases"]) == [b for b in p.bases if b != "nmf" or layer["name"] != "fc3"]
        for basis, entry in layer["bases"].items():
            fitted = load_basis(p.artifact("bases"), layer["name"], basis)
            assert entry["d"] == len(fitted.mean_) and entry["vectors"] == len(fitted.components_)
            made = sorted((p.artifact("grids") / layer["name"]).glob(f"{basis}_*.png"))
            assert len(entry["components"]) == len(made) == min(max(p.n_show, p.n_study), entry["vectors"])
            for j, c in enumerate(entry["components"]):
                assert c["k"] == j + 1 and (out / c["file"]).is_file()
                np.testing.assert_array_equal(np.asarray(Image.open(out / c["file"])),
                                              np.asarray(Image.open(grid_path(p.artifact("grids"), layer["name"],
                                                                              basis, j))))
                assert c["variance"] == pytest.approx(fitted.explained_variance_ratio_[j], abs=1e-6)
                assert ("formula" in c) == (layer["name"].startswith("conv") and j < p.n_study)  # 08: maps only
    names = [f["name"] for f in model["figures"]]
    assert names == [n for n in site.captions() if n in names] and {"fig05_explained_variance", "fig06_ablation",
                                                                "fig_compositional_iou"} <= set(names)
    files = {str(f.relative_to(out)) for f in out.rglob("*") if f.is_file()}
    listed = {c["file"] for l in model["layers"] for b in l["bases"].values() for c in b["components"]}
    listed |= {f["file"] for f in model["figures"]}
    assert files == listed | {"index.html", "site.js", "site.css", "favicon.png", "manifest.json", "manifest.js"}


def test_a_model_without_current_grids_is_left_out_and_08_is_optional(smoke, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(smoke.data_path, data / smoke.data_path.name, ignore=shutil.ignore_patterns(".locks"))
    shutil.rmtree(data / smoke.data_path.name / "compositional")
    out, _ = export(smoke, tmp_path / "site", data_dir=str(data))
    (model,) = json.loads((out / "manifest.json").read_text())["models"]
    assert model["compositional"] is False
    assert not any("formula" in c for l in model["layers"] for b in l["bases"].values() for c in b["components"])
    shutil.rmtree(data / smoke.data_path.name / "index")
    said = []
    with pytest.raises(FileNotFoundError, match="no model of profile 'smoke' has current grids"):
        site.export("smoke", tmp_path / "site2", say=said.append, data_dir=str(data),
                    figures_dir=str(smoke.figures_path.parent))
    assert "mini_alexnet: left out, its grids are missing (needs index, which is missing" in said[0]
    assert (out / "index.html").exists()  # the earlier site is untouched


@pytest.fixture(params=["http", "file"])
def page_url(request, published):
    out, p, manifest = published
    if request.param == "file":
        yield out.as_uri() + "/index.html", out.as_uri() + "/", manifest
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        import socket

        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}/"
        yield base + "index.html", base, manifest
    finally:
        server.terminate()
        server.wait(10)


def component(manifest, layer, basis, k):
    layers = {l["name"]: l for l in manifest["models"][0]["layers"]}
    return layers[layer]["bases"][basis]["components"][k - 1]


def test_the_page_in_a_browser(page_url):
    from playwright.sync_api import sync_playwright

    url, base, manifest = page_url
    errors, outside = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(base) else outside.append(r.url))
            page.goto(url)
            image = page.locator("#grid-image")

            def shown():
                page.wait_for_function("document.getElementById('grid-image').complete")
                return image.get_attribute("src")

            first = manifest["models"][0]["layers"][0]["name"]
            assert shown() == component(manifest, first, "pca", 1)["file"]
            assert page.evaluate("location.hash") == f"#model=mini_alexnet&basis=pca&layer={first}&k=1"
            page.select_option("#layer", "conv2")
            page.select_option("#basis", "neuron")
            page.fill("#k", "3")
            page.press("#k", "Enter")
            page.wait_for_function("location.hash.endsWith('k=3')")
            c = component(manifest, "conv2", "neuron", 3)
            assert shown() == c["file"]
            assert page.evaluate("location.hash") == "#model=mini_alexnet&basis=neuron&layer=conv2&k=3"
            assert page.inner_text("#label") == c["label"]
            assert page.is_visible("#formula") and c["formula"] in page.inner_text("#formula")
            page.locator("body").press("ArrowRight")
            page.wait_for_function("location.hash.endsWith('k=4')")
            assert shown() == component(manifest, "conv2", "neuron", 4)["file"]
            page.go_back()
            page.wait_for_function("location.hash.endsWith('k=3')")
            assert shown() == c["file"]
            page.goto(url + "#model=mini_alexnet&basis=pca&layer=fc1&k=2")
            page.reload()
            assert shown() == component(manifest, "fc1", "pca", 2)["file"]
            assert page.input_value("#layer") == "fc1" and page.input_value("#k") == "2"
            assert not page.is_visible("#formula")  # fc1 has no map: no compositional explanation
            n = len(manifest["models"][0]["layers"][0]["bases"]["pca"]["components"])
            page.fill("#k", str(n + 1))
            page.press("#k", "Enter")
            page.wait_for_selector("#message", state="visible")
            assert f"component {n + 1} is not available: choose 1 to {n}" in page.inner_text("#message")
            assert not page.is_visible("#grid-image")
            page.click("#show-figures")
            page.wait_for_selector("#figures img")
            assert page.evaluate("location.hash").startswith("#view=figures")
            page.click("#show-grids")
            page.goto(url + "#model=mini_alexnet&basis=pca&layer=conv2&k=1")
            shown()
            assert page.is_visible("#formula")
            shot = ROOT / "site" / "screenshot.png"
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert errors == [] and outside == []
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.02  # text and a grid, not a blank page
