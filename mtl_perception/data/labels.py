"""Class semantics: which Cityscapes labels form which class, the classes' names and colours,
and how void is written in published masks. Every tool and the node take them from here.

Cityscapes labels come from cityscapesscripts' official table; the mapping (which labels form
which class) comes from a YAML file (config/classes_cityscapes.yaml) so users can change it.
A segmentation class's colour is the Cityscapes colour of its first label (void: black).

Void in masks: inside the package (training targets, metrics, :class:`ClassMap`) void is the
class map's ``void_id``; in every mask that leaves it (the node's ``semantic`` topic, recorded
ground truth) void is :data:`UNLABELED` (255, vision_msgs' "unlabeled" for pipelines with fewer
than 255 classes). :meth:`ClassMap.to_published` and :meth:`ClassMap.from_published` convert.
The network never predicts void, so a predicted mask is published as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cityscapesscripts.helpers.labels import labels as CITYSCAPES_LABELS

from ..config_loading import from_mapping, read_yaml
from ..resources import config_file, resolve_config_path

if TYPE_CHECKING:
    from ..model.config import ModelConfig

# Cityscapes instanceIds: label_id * 1000 + k for individually annotated objects (k >= 0);
# values below 1000 are plain label ids (stuff, or crowd regions of thing classes).
INSTANCE_ID_DIVISOR = 1000
NUM_LABEL_IDS = 34  # Cityscapes label ids 0..33 (license plate, -1, is never in label images)
LABEL_IDS = {label.name: label.id for label in CITYSCAPES_LABELS if label.id >= 0}
LABEL_COLOURS = {label.name: label.color for label in CITYSCAPES_LABELS if label.id >= 0}
DEFAULT_CLASSES_FILE = config_file("classes_cityscapes.yaml")
UNLABELED = 255  # void in published and recorded masks (vision_msgs' "unlabeled")
VOID_COLOUR = (0, 0, 0)


NETWORK_VOID_ID = 0  # the network's void class: never predicted (see the Predictor)


def class_names(names: Sequence[str], count: int) -> tuple[str, ...]:
    """``names``, or the ids as text for an unnamed model ("0", "1", ...)."""
    return tuple(names) if names else tuple(str(i) for i in range(count))


@lru_cache(maxsize=1)
def default_class_map() -> ClassMap:
    """The packaged class map (config/classes_cityscapes.yaml), read once."""
    return ClassMap.from_yaml(DEFAULT_CLASSES_FILE)


def segmentation_colours(
    num_classes: int, names: Sequence[str] = (), class_map: ClassMap | None = None
) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours of segmentation classes, from ``class_map`` (default:
    the packaged one): a class named in ``names`` gets the colour of the class map's class of
    that name; unnamed classes (``names`` empty) take the class map's colours by id; any other
    class a generated colour (the same every run)."""
    class_map = class_map or default_class_map()
    by_name = dict(zip(class_map.seg_names, class_map.seg_colours, strict=True))
    generated = np.random.default_rng(0).integers(0, 256, (num_classes, 3), dtype=np.uint8)
    colours = np.empty((num_classes, 3), np.uint8)
    for index in range(num_classes):
        if names:
            colour = by_name.get(names[index])
        else:
            colour = class_map.seg_colours[index] if index < class_map.num_seg_classes else None
        colours[index] = generated[index] if colour is None else colour
    return colours


@dataclass(frozen=True)
class ClassSemantics:
    """A model's classes as the node and the tools show and publish them.

    Attributes:
        seg_names, det_names: class names by id (ids as text for an unnamed model).
        seg_colours: (num_seg_classes, 3) uint8 RGB (:func:`segmentation_colours`).
        void_id: the network's void class (published masks never hold it: see
            :data:`UNLABELED`).
    """

    seg_names: tuple[str, ...]
    det_names: tuple[str, ...]
    seg_colours: np.ndarray
    void_id: int = NETWORK_VOID_ID


@lru_cache(maxsize=8)
def class_semantics(model_config: ModelConfig) -> ClassSemantics:
    """Names and colours of ``model_config``'s classes (built once per model config)."""
    seg_names = class_names(model_config.seg_class_names, model_config.num_seg_classes)
    return ClassSemantics(
        seg_names,
        class_names(model_config.det_class_names, model_config.num_det_classes),
        segmentation_colours(model_config.num_seg_classes, model_config.seg_class_names),
    )


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
        seg_colours: (num_seg_classes, 3) uint8 RGB, the Cityscapes colour of each class's
            first label; void black.
    """

    seg_names: tuple[str, ...]
    void_id: int
    det_names: tuple[str, ...]
    seg_lut: np.ndarray
    det_lut: np.ndarray
    min_box_size: float
    seg_colours: np.ndarray

    @property
    def num_seg_classes(self) -> int:
        return len(self.seg_names)

    @property
    def num_det_classes(self) -> int:
        return len(self.det_names)

    def segmentation(self, label_ids: np.ndarray) -> np.ndarray:
        """(H, W) Cityscapes label ids -> (H, W) uint8 segmentation class ids."""
        return self.seg_lut[label_ids]

    def to_published(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class ids -> the same with void as :data:`UNLABELED` (a new array)."""
        return np.where(mask == self.void_id, UNLABELED, mask).astype(np.uint8)

    def from_published(self, mask: np.ndarray) -> np.ndarray:
        """(H, W) uint8 published mask -> class ids with :data:`UNLABELED` as ``void_id``."""
        return np.where(mask == UNLABELED, self.void_id, mask).astype(np.uint8)

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
        seg_colours = np.array([VOID_COLOUR] * (len(seg_ids) + 1), dtype=np.uint8)
        seg_lut = np.full(256, seg.void_id, dtype=np.uint8)
        seg_labels = _resolve(seg.classes, "segmentation")
        for entry, label_ids in zip(seg.classes, seg_labels, strict=True):
            seg_names[entry.id] = entry.name
            seg_colours[entry.id] = LABEL_COLOURS[entry.labels[0]]
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
            tuple(seg_names),
            seg.void_id,
            tuple(det_names),
            seg_lut,
            det_lut,
            det.min_box_size,
            seg_colours,
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
