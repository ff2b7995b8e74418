"""Temperature scaling maths (`evaluation.calibration`)."""
import numpy as np
import pytest

from neuralscan_cli.evaluation.calibration import T_BOUNDS, apply_temperature, fit_temperature, negative_log_likelihood


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_t", [0.6, 1.0, 1.8])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_t):
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.5, size=(20000, 4))
    probs = _softmax(logits)  # what the network says
    truth = _softmax(logits / true_t)  # how often each class is really right
    y = np.array([rng.choice(4, p=row) for row in truth])
    t = fit_temperature(y, probs)
    assert abs(t - true_t) < 0.05 * true_t
    # the fitted temperature is the likelihood's optimum: both neighbours are worse
    nll = negative_log_likelihood(y, apply_temperature(probs, t))
    assert nll < negative_log_likelihood(y, apply_temperature(probs, t * 0.9))
    assert nll < negative_log_likelihood(y, apply_temperature(probs, t * 1.1))


def test_apply_temperature_sharpens_or_softens_without_changing_the_class():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.25, 0.25, 0.5]])
    sharp, soft = apply_temperature(p, 0.5), apply_temperature(p, 2.0)
    for q in (sharp, soft):
        np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-6)
        assert (q.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (sharp.max(axis=1) > p.max(axis=1)).all() and (soft.max(axis=1) < p.max(axis=1)).all()
    # T = 0.5 squares the probabilities before renormalising: [0.25, 0.09, 0.04] / 0.38
    np.testing.assert_allclose(sharp[0], np.array([0.25, 0.09, 0.04]) / 0.38, atol=1e-6)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-7)


def test_fit_stays_in_bounds_and_refuses_bad_shapes():
    # predictions unrelated to the labels: flatter is always better, up to the upper bound
    rng = np.random.default_rng(1)
    p = _softmax(rng.normal(scale=3, size=(500, 3)))
    t = fit_temperature(rng.integers(0, 3, 500), p)
    assert T_BOUNDS[1] * 0.95 <= t <= T_BOUNDS[1]
    with pytest.raises(ValueError):
        fit_temperature([0, 1], p[:3])
