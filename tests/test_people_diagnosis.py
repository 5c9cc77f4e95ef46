"""How much of people's bone deviations a calibration recovers (core.tools.diagnose_people)."""

from __future__ import annotations

import numpy as np
import pytest

from core.tools.diagnose_people import deviation_recovery


@pytest.fixture(scope="module")
def people() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    mean = rng.uniform(0.02, 0.05, (12, 20))
    true = mean * np.exp(rng.normal(0.0, 0.05, mean.shape))
    return true, mean


def test_a_calibration_that_sees_half_of_each_deviation_has_slope_one_half(people) -> None:
    true, mean = people
    slope, corr = deviation_recovery(mean * (true / mean) ** 0.5, true, mean)
    assert slope == pytest.approx(0.5, abs=1e-9) and corr == pytest.approx(1.0, abs=1e-9)
    assert deviation_recovery(mean, true, mean) == (0.0, 0.0)  # the mean hand sees nothing
    assert deviation_recovery(true, true, mean)[0] == pytest.approx(1.0)


def test_a_per_bone_bias_is_removed_only_when_asked(people) -> None:
    true, mean = people
    bias = np.random.default_rng(6).normal(0.0, 0.1, 20)  # the same for every person, per bone
    biased = true * np.exp(bias)
    slope, corr = deviation_recovery(biased, true, mean, remove_bias=True)
    assert slope == pytest.approx(1.0, abs=1e-9) and corr == pytest.approx(1.0, abs=1e-9)
    assert deviation_recovery(biased, true, mean)[1] < 0.7  # the bias blurs the relation


def test_leave_one_out_finds_the_frame_that_biases_the_calibration() -> None:
    """A fake calibration whose skeleton is the truth stretched by the mean bias of the frames
    it uses: dropping the most biased frame helps most, and the harm ranks like the bias."""
    from types import SimpleNamespace

    from core.tools.diagnose_people import leave_one_out_bound

    rng = np.random.default_rng(3)
    truth = np.cumsum(rng.uniform(0.002, 0.006, (21, 3)), axis=0)  # hand length about 100 mm
    bias = np.concatenate([rng.uniform(0.0, 0.02, 9), [0.3], rng.uniform(0.0, 0.02, 10)])  # frame 9 is bad

    class Session:
        _candidates: list = []
        _selected = None

        def calibrate(self, opt, frames, uniform):
            b = np.mean([self._candidates[i] for i in frames])
            return SimpleNamespace(skeleton=truth[0] + (truth - truth[0]) * (1.0 + b))

    table = {"subject": np.zeros(20, int), "candidates": list(bias)}
    data = SimpleNamespace(subject=np.zeros(20, int), true_skeleton=np.repeat(truth[None], 20, 0))
    out = leave_one_out_bound(Session(), table, data, {"bias": bias, "minus_bias": -bias})
    assert out["best_single_drop_mm"] < 0.5 * out["uniform_mm"] and out["best_single_drop_gain"] > 0.5
    assert out["spearman_harm"]["bias"] == pytest.approx(1.0) and out["spearman_harm"]["minus_bias"] == -1.0
