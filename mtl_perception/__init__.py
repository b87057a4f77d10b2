"""mtl_perception: one multi-task network for semantic segmentation and object detection."""

__version__ = "0.1.0"
