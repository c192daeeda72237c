"""The machine observer (helpers/study/observers.py)."""
import numpy as np
import pytest
from tests.conftest import THUMB, K, M, fake_grid

from helpers.study import observers as observer
from helpers.study import stimuli as study
from helpers.study.stimuli import ResponseLog, shuffle_columns


def smooth_grid(rng, m=M, k=K, thumb=THUMB, gap=study.GAP):
    """Columns whose patches brighten from left to right (a coherent transition), noisy rows."""
    out = np.full((k * (thumb + gap) - gap, m * (thumb + gap) - gap, 3), 255, np.uint8)
    for c in range(m):
        for r in range(k):
            level = 20 * c + rng.integers(0, 15, (thumb, thumb, 3))
            out[r * (thumb + gap):r * (thumb + gap) + thumb, c * (thumb + gap):c * (thumb + gap) + thumb] = level
    return out


def test_column_features_are_pooled_patch_means():
    rng = np.random.default_rng(0)
    grid = fake_grid(rng, thumb=8)
    f = observer.column_features(grid, M, K, pool=2)
    assert f.shape == (M, 2 * 2 * 1)
    step = 8 + study.GAP
    col = 3
    patches = [grid[r * step:r * step + 8, col * step:col * step + 8].astype(float) / 255 for r in range(K)]
    quads = [[p[:4, :4].mean(), p[:4, 4:].mean(), p[4:, :4].mean(), p[4:, 4:].mean()] for p in patches]
    np.testing.assert_allclose(f[col], np.mean(quads, axis=0), atol=1 / 255)
    with pytest.raises(ValueError, match="k=4 rows"):
        observer.column_features(grid, M, 4)


def test_it_picks_the_coherent_grid_wherever_it_is():
    rng = np.random.default_rng(1)
    for seed in range(20):
        grid = smooth_grid(rng)
        shuffled, _ = shuffle_columns(grid, M, np.random.default_rng(seed))
        assert observer.roughness(grid, M, K) < observer.roughness(shuffled, M, K)
        assert observer.choose(grid, shuffled, M, K) == "top"
        assert observer.choose(shuffled, grid, M, K) == "bottom"
    assert observer.choose(grid, grid, M, K) == "top"  # a tie


def test_run_logs_every_trial_as_a_machine_apart_from_humans(study_profile):
    p = study_profile
    study.make_stimuli(p)
    path = observer.run(p)
    assert path == p.artifact("responses") / "machine" / f"{observer.NAME}.jsonl"
    records = ResponseLog(path).records()
    table, stimuli_hash = study.load_stimuli(p.artifact("stimuli"))
    assert sorted(r["stimulus_id"] for r in records) == sorted(table.stimulus_id)
    assert {r["observer"] for r in records} == {"machine"} and {r["input"] for r in records} == {"machine"}
    assert {r["stimuli_hash"] for r in records} == {stimuli_hash}
    assert all(r["correct"] == (r["choice"] == r["ordered_position"]) for r in records)
    assert not (p.artifact("responses") / "human").exists()
    again = ResponseLog(observer.run(p)).records()  # rewritten, not appended; same answers
    assert [(r["trial"], r["choice"]) for r in again] == [(r["trial"], r["choice"]) for r in records]
