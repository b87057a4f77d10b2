"""Class mapping from Cityscapes label ids to the network's segmentation and detection classes.

Cityscapes labels come from cityscapesscripts' official table; the mapping (which labels form
which class) comes from a YAML file (config/classes_cityscapes.yaml) so users can change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

# Cityscapes instanceIds: label_id * 1000 + k for individually annotated objects (k >= 0);
# values below 1000 are plain label ids (stuff, or crowd regions of thing classes).
INSTANCE_ID_DIVISOR = 1000
NUM_LABEL_IDS = 34  # Cityscapes label ids 0..33 (license plate, -1, is never in label images)
DEFAULT_CLASSES_FILE = Path(__file__).resolve().parents[2] / "config" / "classes_cityscapes.yaml"


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
        """Reads the mapping; every label name must exist in cityscapesscripts' table."""
        path = Path(path)
        try:
            spec = yaml.safe_load(path.read_text())
            return cls._from_spec(spec)
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"invalid class mapping {path}: {error}") from error

    @classmethod
    def _from_spec(cls, spec: dict) -> ClassMap:
        by_name = {label.name: label.id for label in CITYSCAPES_LABELS if label.id >= 0}
        seg, det = spec["segmentation"], spec["detection"]
        void_id = int(seg["void_id"])

        def resolve(names: list[str], where: str) -> list[int]:
            unknown = [n for n in names if n not in by_name]
            if unknown:
                raise ValueError(
                    f"{where}: unknown Cityscapes labels {unknown}; known: {sorted(by_name)}"
                )
            return [by_name[n] for n in names]

        seg_ids = [int(c["id"]) for c in seg["classes"]] + [void_id]
        if sorted(seg_ids) != list(range(len(seg_ids))):
            raise ValueError(f"segmentation ids with void must be 0..N-1, got {sorted(seg_ids)}")
        seg_names = ["void"] * len(seg_ids)
        seg_lut = np.full(256, void_id, dtype=np.uint8)
        for entry in seg["classes"]:
            seg_names[int(entry["id"])] = str(entry["name"])
            seg_lut[resolve(entry["labels"], f"segmentation class {entry['name']}")] = entry["id"]

        det_ids = sorted(int(c["id"]) for c in det["classes"])
        if det_ids != list(range(len(det_ids))):
            raise ValueError(f"detection ids must be 0..K-1, got {det_ids}")
        det_names = [""] * len(det_ids)
        det_lut = np.full(256, -1, dtype=np.int64)
        for entry in det["classes"]:
            det_names[int(entry["id"])] = str(entry["name"])
            det_lut[resolve(entry["labels"], f"detection class {entry['name']}")] = entry["id"]
        return cls(
            tuple(seg_names),
            void_id,
            tuple(det_names),
            seg_lut,
            det_lut,
            float(det.get("min_box_size", 0.0)),
        )
