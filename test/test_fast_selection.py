"""The fast selection (``-m "not slow"``, what the robot's ``colcon test`` runs) waits for no
training run: a fast test that reaches one fails at once, naming itself (issue 22 section 7)."""

from __future__ import annotations

import re

import pytest
from helpers.fast_selection import refuse_in_fast_test, set_current_test
from helpers.models import trained_small_models, untrained_small_model

from mtl_perception.data.synthetic import generate_scene
from mtl_perception.inference.predictor import Predictor, PredictorConfig


def test_a_fast_test_that_reaches_a_training_run_fails_at_once_naming_itself(request, tmp_path):
    data = tmp_path / "data"
    with pytest.raises(RuntimeError, match=re.escape(request.node.nodeid) + " is not marked slow"):
        trained_small_models(data, (10, 150))
    assert not data.exists()  # refused before its data set was written


def test_a_slow_test_may_train():
    set_current_test("test_x.py::test_trains", slow=True)
    try:
        refuse_in_fast_test("a training run")  # no error
    finally:
        set_current_test("test_x.py::test_fast", slow=False)
    with pytest.raises(RuntimeError, match=r"test_x\.py::test_fast is not marked slow.*minutes"):
        refuse_in_fast_test("minutes")


def test_the_untrained_model_scores_like_a_trained_one():
    """Spread scores and overlapping boxes, so the fast tests' post-processing has real work."""
    model = untrained_small_model()
    predictor = Predictor(model, model.config, PredictorConfig(score_threshold=0.05))
    for seed in (11, 12):
        prediction = predictor.predict(generate_scene(512, 256, seed)[0])[0]
        assert len(prediction.scores) >= 10
        assert prediction.scores.min() < 0.5 and prediction.scores.max() < 0.9999
        assert len(set(prediction.mask.ravel().tolist())) >= 3  # not one class everywhere
