"""tabs.figures: the smoothing and thinning both training charts use."""
import numpy as np

from tabs.figures import MAX_CURVE_POINTS, downsample, ema


def test_ema_keeps_weight_of_the_past_and_zero_weight_is_the_raw_curve():
    assert ema([4.0, 0.0, 0.0], 0.5) == [4.0, 2.0, 1.0]
    assert ema([3.0, 1.0, 2.0], 0.0) == [3.0, 1.0, 2.0]
    assert ema([], 0.9) == []


def test_downsample_thins_evenly_and_keeps_both_ends():
    xs = list(range(10 * MAX_CURVE_POINTS + 7))
    x, y = downsample(xs, [2 * v for v in xs])
    assert len(x) == MAX_CURVE_POINTS and x[0] == 0 and x[-1] == xs[-1]
    assert np.all(np.diff(x) > 0) and np.array_equal(y, 2 * x)
    short_x, short_y = downsample([1, 2, 3], [4, 5, 6])
    assert short_x.tolist() == [1, 2, 3] and short_y.dtype == np.float32
