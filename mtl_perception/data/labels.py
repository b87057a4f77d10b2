"""Class mapping from Cityscapes label ids to the network's segmentation and detection classes.

Cityscapes labels come from cityscapesscripts' official table; the mapping (which labels form
which class) comes from a YAML file (config/classes_cityscapes.yaml) so users can change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from ..config_loading import from_mapping, read_yaml
from ..resources import config_file, resolve_config_path

# Cityscapes instanceIds: label_id * 1000 + k for individually annotated objects (k >= 0);
# values below 1000 are plain label ids (stuff, or crowd regions of thing classes).
INSTANCE_ID_DIVISOR = 1000
NUM_LABEL_IDS = 34  # Cityscapes label ids 0..33 (license plate, -1, is never in label images)
LABEL_IDS = {label.name: label.id for label in CITYSCAPES_LABELS if label.id >= 0}
DEFAULT_CLASSES_FILE = config_file("classes_cityscapes.yaml")


@dataclass(frozen=True)
class ClassMap:
    """Lookup tables from Cityscapes label ids to class ids.

    Attributes:
        seg_names: segmentation class names by id (index ``void_id`` is "void").
        void_id: the ignored segmentation class.
        det_names: detection class names by id.
        seg_lut: (256,) uint8, label id -> segmentation class (void for unlisted ids).
        det_lut: (256,) int64, label id -> detection class, -1 for none.
        min_box_size: smallest kept box side, network-input pixels.
    """

    seg_names: tuple[str, ...]
    void_id: int
    det_names: tuple[str, ...]
    seg_lut: np.ndarray
    det_lut: np.ndarray
    min_box_size: float

    @property
    def num_seg_classes(self) -> int:
        return len(self.seg_names)

    @property
    def num_det_classes(self) -> int:
        return len(self.det_names)

    def segmentation(self, label_ids: np.ndarray) -> np.ndarray:
        """(H, W) Cityscapes label ids -> (H, W) uint8 segmentation class ids."""
        return self.seg_lut[label_ids]

    def instance_classes(self, instance_ids: np.ndarray) -> np.ndarray:
        """Detection class of each instance id value, -1 for crowd, stuff or unmapped labels."""
        instance_ids = np.asarray(instance_ids, dtype=np.int64)
        classes = self.det_lut[np.clip(instance_ids // INSTANCE_ID_DIVISOR, 0, 255)]
        return np.where(instance_ids >= INSTANCE_ID_DIVISOR, classes, -1)

    @classmethod
    def from_yaml(cls, path: str | Path = DEFAULT_CLASSES_FILE) -> ClassMap:
        """Reads the mapping; every label name must exist in cityscapesscripts' table.

        Raises:
            ValueError: the file is missing, unreadable, empty or not YAML, or a field is
                missing, of the wrong type, duplicated or unknown (names the file and the field,
                e.g. ``segmentation.classes[2].id``).
        """
        path = resolve_config_path(path)
        spec = read_yaml(path, "class map")
        if not spec:
            raise ValueError(
                f"class map {path} is empty: expected 'segmentation' and 'detection' sections"
            )
        try:
            return cls._from_spec(spec)
        except ValueError as error:
            raise ValueError(f"invalid class map {path}: {error}") from error

    @classmethod
    def _from_spec(cls, spec: dict) -> ClassMap:
        unknown = sorted(str(key) for key in spec if key not in ("segmentation", "detection"))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; expected 'segmentation', 'detection'")
        missing = [key for key in ("segmentation", "detection") if key not in spec]
        if missing:
            raise ValueError(f"missing sections {missing}")
        seg = from_mapping(_SegmentationSpec, spec["segmentation"], "segmentation")
        det = from_mapping(_DetectionSpec, spec["detection"], "detection")

        seg_ids = _check_ids(seg.classes, "segmentation")
        if seg.void_id in seg_ids:
            raise ValueError(
                f"segmentation.void_id: {seg.void_id} is also the id of "
                f"segmentation.classes[{seg_ids.index(seg.void_id)}]"
            )
        if sorted([*seg_ids, seg.void_id]) != list(range(len(seg_ids) + 1)):
            raise ValueError(
                f"segmentation: ids with void_id must be 0..{len(seg_ids)}, "
                f"got {sorted([*seg_ids, seg.void_id])}"
            )
        seg_names = ["void"] * (len(seg_ids) + 1)
        seg_lut = np.full(256, seg.void_id, dtype=np.uint8)
        seg_labels = _resolve(seg.classes, "segmentation")
        for entry, label_ids in zip(seg.classes, seg_labels, strict=True):
            seg_names[entry.id] = entry.name
            seg_lut[label_ids] = entry.id

        if det.min_box_size < 0:
            raise ValueError(f"detection.min_box_size: must be >= 0, got {det.min_box_size}")
        det_ids = _check_ids(det.classes, "detection")
        if sorted(det_ids) != list(range(len(det_ids))):
            raise ValueError(f"detection: class ids must be 0..{len(det_ids) - 1}, got {det_ids}")
        det_names = [""] * len(det_ids)
        det_lut = np.full(256, -1, dtype=np.int64)
        det_labels = _resolve(det.classes, "detection")
        for entry, label_ids in zip(det.classes, det_labels, strict=True):
            det_names[entry.id] = entry.name
            det_lut[label_ids] = entry.id
        return cls(
            tuple(seg_names), seg.void_id, tuple(det_names), seg_lut, det_lut, det.min_box_size
        )


@dataclass(frozen=True)
class _ClassSpec:
    """One class of the YAML file: its id, name and the Cityscapes labels that form it."""

    id: int
    name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class _SegmentationSpec:
    void_id: int
    classes: tuple[_ClassSpec, ...]


@dataclass(frozen=True)
class _DetectionSpec:
    classes: tuple[_ClassSpec, ...]
    min_box_size: float = 0.0


def _check_ids(classes: tuple[_ClassSpec, ...], section: str) -> list[int]:
    """The classes' ids; refuses no classes, negative and duplicate ids (naming the field)."""
    if not classes:
        raise ValueError(f"{section}.classes: expected at least one class")
    seen: dict[int, int] = {}
    for index, entry in enumerate(classes):
        where = f"{section}.classes[{index}]"
        if entry.id < 0:
            raise ValueError(f"{where}.id: must be >= 0, got {entry.id}")
        if entry.id in seen:
            raise ValueError(
                f"{where}.id: duplicate id {entry.id} (also {section}.classes[{seen[entry.id]}])"
            )
        seen[entry.id] = index
    return list(seen)


def _resolve(classes: tuple[_ClassSpec, ...], section: str) -> list[list[int]]:
    """Cityscapes label ids per class; refuses unknown names, empty lists and a label listed
    by two classes (naming the field)."""
    owner: dict[str, str] = {}
    resolved = []
    for index, entry in enumerate(classes):
        where = f"{section}.classes[{index}].labels"
        if not entry.labels:
            raise ValueError(f"{where}: expected at least one Cityscapes label")
        for position, name in enumerate(entry.labels):
            if name not in LABEL_IDS:
                raise ValueError(
                    f"{where}[{position}]: unknown Cityscapes label {name!r}; "
                    f"known: {sorted(LABEL_IDS)}"
                )
            if name in owner:
                raise ValueError(f"{where}[{position}]: label {name!r} is also in {owner[name]}")
            owner[name] = f"{where}[{position}]"
        resolved.append([LABEL_IDS[name] for name in entry.labels])
    return resolved
