"""Freezing parts of the network for the paper's training stages (section 4.2).

A frozen part takes no gradient (``requires_grad=False``, so optimisers skip it) and stays in
eval mode, so its BatchNorm running statistics and dropout stay fixed even while the rest of the
network trains; :meth:`MultiTaskNet.train` keeps it so.
"""

from __future__ import annotations

from collections.abc import Iterable

from .network import DETECTOR_PARTS, SEGMENTATION_PARTS, MultiTaskNet


def set_frozen(model: MultiTaskNet, part_names: Iterable[str], frozen: bool) -> None:
    """Freezes (or unfreezes) the named parts: any of encoder, easpp, decoder, detector."""
    parts = model.parts()
    for name in part_names:
        if name not in parts:
            raise ValueError(f"unknown network part {name!r}; parts are {sorted(parts)}")
        for parameter in parts[name].parameters():
            parameter.requires_grad_(not frozen)
        if frozen:
            model.frozen_parts.add(name)
            parts[name].eval()
        else:
            model.frozen_parts.discard(name)
            parts[name].train(model.training)


def freeze_segmentation(model: MultiTaskNet) -> None:
    """Stage 3: encoder, eASPP and decoder frozen, BN statistics included."""
    set_frozen(model, SEGMENTATION_PARTS, True)


def freeze_detector(model: MultiTaskNet) -> None:
    """Stage 2: the detector frozen."""
    set_frozen(model, DETECTOR_PARTS, True)


def unfreeze_all(model: MultiTaskNet) -> None:
    """Stages 1 and 4: the whole network trains."""
    set_frozen(model, (*SEGMENTATION_PARTS, *DETECTOR_PARTS), False)
