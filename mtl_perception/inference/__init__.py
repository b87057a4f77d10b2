"""Inference: the Predictor (PyTorch or ONNX Runtime) and ONNX export."""

from .predictor import Prediction, Predictor, PredictorConfig

__all__ = ["Prediction", "Predictor", "PredictorConfig"]
