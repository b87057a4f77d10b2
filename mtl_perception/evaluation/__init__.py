"""Metrics (IoU, AP) and the offline evaluator (mtl-eval)."""
