"""Artifacts of different settings live side by side; pruning removes only what no setting reads."""
from __future__ import annotations

import json

from helpers import run, verify
from helpers.pipeline import load_profile, store

SHARED = ("sample", "model")
OWN = ("bases", "index", "grids")


def test_two_bases_settings_stay_current_side_by_side_and_prune_removes_only_unread_ones(copy):
    every, paper = copy.params, {**copy.params, "bases": "pca,neuron"}
    run.run("smoke", only=["04"], parameters=paper, say=lambda _: None)  # 02 and 03 run first for it
    first, second = load_profile("smoke", **every), load_profile("smoke", **paper)
    for p in (first, second):
        assert {a: s for a, s, _ in verify.report(p) if a in SHARED + OWN} == {a: "good" for a in SHARED + OWN}
    for artifact in OWN:
        assert first.artifact(artifact) != second.artifact(artifact)
        assert first.artifact(artifact).parent == second.artifact(artifact).parent
    for artifact in SHARED:
        assert first.artifact(artifact) == second.artifact(artifact)
    made = {a: store.read_meta(first.artifact(a))["created"] for a in OWN}
    said = []
    run.run("smoke", only=["04"], parameters=every, say=said.append)  # opens its own: nothing is remade
    assert said[0] == f"plan (smoke, {copy.data}): 04_visualize"
    assert {a: store.read_meta(first.artifact(a))["created"] for a in OWN} == made

    assert verify.unread(copy.data.parent) == []
    printed = []
    assert verify.prune(copy.data.parent, say=printed.append) == 0 and "read by some setting" in printed[-1]

    theirs = {a: second.artifact(a) for a in OWN}
    stale = theirs["bases"]  # as if made by an older version of the code
    meta = json.loads((stale / "meta.json").read_text())
    meta["code"] = {**meta["code"], "helpers/bases/pca.py": "sha256:older"}
    (stale / "meta.json").write_text(json.dumps(meta))
    found = dict(verify.unread(copy.data.parent))
    assert found[stale] == "made by other code than this checkout's"
    assert found[theirs["index"]] == "made from a bases that is gone or that no setting reads"
    assert found[theirs["grids"]].startswith("made from a ")
    assert set(found) == set(theirs.values())
    listed = []
    freed = verify.prune(copy.data.parent, dry_run=True, say=listed.append)
    assert freed > 0 and stale.exists() and any("would remove" in line for line in listed)
    assert verify.prune(copy.data.parent, say=lambda _: None) == freed
    assert not any(folder.exists() for folder in theirs.values())
    assert {a: s for a, s, _ in verify.report(first) if a in SHARED + OWN} == {a: "good" for a in SHARED + OWN}
