"""Video Drift Error against hand-computed values."""
import math

import numpy as np
import pytest

from evaluation.vde import chunk_means, vde_weights, video_drift_error


def test_vde_of_a_staircase_by_hand():
    series = np.repeat(np.arange(1.0, 11.0), 5)  # chunk i (1-based) has value i, m_1 = 1
    np.testing.assert_array_equal(chunk_means(series, 10), np.arange(1.0, 11.0))
    # Σ_{i=2..10} (10 - i + 1) (i - 1) = Σ_{k=1..9} (10 - k) k = 450 - 285
    assert video_drift_error(series, 10, "linear") == pytest.approx(165.0)
    log_expected = sum(math.log(10 - i + 1) * (i - 1) for i in range(2, 11))
    assert video_drift_error(series, 10, "log") == pytest.approx(log_expected)
    assert vde_weights(4, "linear").tolist() == [3.0, 2.0, 1.0]


def test_vde_is_zero_without_drift_and_undefined_for_a_zero_start():
    assert video_drift_error(np.full(30, 7.0)) == 0.0
    assert video_drift_error(np.r_[np.zeros(3), np.ones(27)]) is None
    assert video_drift_error(np.r_[np.full(5, 2.0), np.full(45, 3.0)]) == pytest.approx(sum(range(1, 10)) * 0.5)
    with pytest.raises(ValueError, match="cannot be cut"):
        chunk_means(np.ones(5), 10)
