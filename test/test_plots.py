"""The evaluation's pictures (:mod:`mtl_perception.evaluation.plots`) in the corner cases a run
can reach: nothing scored (every frame late, a zero-stamp bag) leaves no class to draw."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mtl_perception.evaluation.plots import confusion_matrix_png


@pytest.mark.parametrize("shape", [(0, 0), (0, 3), (3, 0), (1, 1)])
def test_a_confusion_matrix_of_nothing_or_one_class_draws_without_a_warning(tmp_path, shape):
    counts = np.full(shape, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's singular-axis UserWarning fails the test
        confusion_matrix_png(
            tmp_path / "matrix.png", counts, ["a"] * shape[0], ["a"] * shape[1], "title"
        )
    assert (tmp_path / "matrix.png").read_bytes().startswith(b"\x89PNG")
