"""Detection utilities: boxes, anchors, YOLOv2 target assignment and coding."""
