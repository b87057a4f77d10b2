"""Datasets, class mapping and augmentation for training and evaluation (never imports ROS)."""
