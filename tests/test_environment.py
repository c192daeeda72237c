"""The two ways to install agree: environment.yml (conda) holds every package pip installs for the paper profile
(pyproject.toml's dependencies and the extras dev, paper and gpu), with the same version ranges."""
import re
import tomllib

import yaml

from helpers.pipeline.settings import ROOT

CONDA_NAMES = {"torch": "pytorch-gpu", "faiss-gpu-cu12": "faiss-gpu"}
"""pip's name -> conda-forge's, where they differ."""


def requirement(text: str) -> tuple[str, str]:
    """``"torch>=2.2,<2.15"`` -> ``("torch", ">=2.2,<2.15")``."""
    name, spec = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", text.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_holds_what_pip_installs_for_the_paper_profile():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(requirement(r) for r in [*project["dependencies"], *extras["dev"], *extras["paper"],
                                           *extras["gpu"]])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for item in env["dependencies"]:
        for r in item["pip"] if isinstance(item, dict) else [item]:
            if not r.startswith("-e") and r not in ("pip",) and not r.startswith("python="):
                name, spec = requirement(r)
                found[name] = spec
    assert {CONDA_NAMES.get(n, n): s for n, s in wanted.items()} == {n: s for n, s in found.items()}
    assert "-e ." in next(item for item in env["dependencies"] if isinstance(item, dict))["pip"]


def make_n(target: str, env: dict, *args) -> str:
    import os
    import subprocess

    base = {k: v for k, v in os.environ.items() if not k.startswith("CONDA") and k != "PY"}
    done = subprocess.run(["make", "-n", target, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_runs_in_the_active_conda_environment_or_the_interpreter_given():
    conda = {"CONDA_PREFIX": "/opt/envs/neuron-explanations", "CONDA_DEFAULT_ENV": "neuron-explanations"}
    out = make_n("figures", conda)
    assert "/opt/envs/neuron-explanations/bin/python -m helpers.run --profile quick" in out
    assert "python3 -m venv" not in out.split("/opt/envs")[0]  # no venv is made for it
    assert ".venv/bin/python -m helpers.run" in make_n("figures", {**conda, "CONDA_DEFAULT_ENV": "base"})
    assert ".venv/bin/python -m helpers.run" in make_n("figures", {})
    out = make_n("paper", conda, "PY=/usr/local/bin/python3.11", "IMAGENET=/data/imagenet", "DRY=1")
    assert "/usr/local/bin/python3.11 -m helpers.run --profile paper -p data_root=/data/imagenet" in out
    assert "pip install -e '.[$extras]'" in out and 'extras="dev,paper,' in out and "--dry-run" in out
    assert "helpers.images.broden" not in out  # a dry run fetches nothing
    out = make_n("paper", {}, "IMAGENET=/data/imagenet", "ONLY=01 02")
    assert "helpers.images.broden" not in out and "--only 01 02" in out  # 08 left out: no Broden
    assert ".venv/bin/python -m helpers.images.broden data/broden" in make_n("paper", {}, "IMAGENET=/data/imagenet")
