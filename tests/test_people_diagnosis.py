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
