"""Explain and localize: class activation heatmaps, boxes, overlays and localization metrics.

Typical use with one image's model outputs (numpy only)::

    prob = fracture_probability_map(features, weights, bias, mask_logits)  # (h, w) in [0, 1]
    boxes = boxes_from_heatmap(upsample_to_input(prob, 96), letterbox)     # original pixels
    heat = heatmap_to_original(prob, letterbox)                            # (H, W) float32
    overlay = render_overlay(radiograph.pixels, heat, boxes)               # PIL RGB
"""

from __future__ import annotations

from fracsight.explain.boxes import (
    BoxLike,
    DetectedBox,
    as_xyxy,
    boxes_from_heatmap,
    iou,
    label_components,
    nms,
)
from fracsight.explain.heatmap import (
    class_activation_map,
    combine_maps,
    fracture_probability_map,
    heatmap_to_original,
    normalize_map,
    sigmoid,
    softmax,
    upsample_to_input,
)
from fracsight.explain.localization import (
    HitRate,
    average_precision_boxes,
    average_precision_boxes_coco,
    denormalize_box,
    hit_rate,
    pointing_game,
    top_box,
    top_box_hits,
)
from fracsight.explain.overlay import (
    COLORMAPS,
    MIN_HEAT,
    OVERLAY_FORMATS,
    colormap_lut,
    overlay_save_options,
    overlay_words,
    render_overlay,
    save_overlay,
    short_overlay_stem,
    side_by_side,
    summary_lines,
)

__all__ = [
    "COLORMAPS",
    "MIN_HEAT",
    "OVERLAY_FORMATS",
    "BoxLike",
    "DetectedBox",
    "HitRate",
    "as_xyxy",
    "average_precision_boxes",
    "average_precision_boxes_coco",
    "boxes_from_heatmap",
    "class_activation_map",
    "colormap_lut",
    "combine_maps",
    "denormalize_box",
    "fracture_probability_map",
    "heatmap_to_original",
    "hit_rate",
    "iou",
    "label_components",
    "nms",
    "normalize_map",
    "overlay_save_options",
    "overlay_words",
    "pointing_game",
    "render_overlay",
    "save_overlay",
    "short_overlay_stem",
    "side_by_side",
    "sigmoid",
    "softmax",
    "summary_lines",
    "top_box",
    "top_box_hits",
    "upsample_to_input",
]
