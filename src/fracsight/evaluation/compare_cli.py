"""``fracsight compare``: two models on the same images, paired. Thin: parse, call
:func:`~fracsight.evaluation.compare.compare_models`, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fracsight._options import split_callback
from fracsight._terminal import write_stdout

__all__ = ["compare"]


def compare(
    model_a: Annotated[str, typer.Argument(help="Model A: bundle folder, .zip or packaged name.")],
    model_b: Annotated[str, typer.Argument(help="Model B, compared with A (differences are B - A).")],
    data_dir: Annotated[Path, typer.Argument(help="Data set with fracture or class labels (any layout).")],
    split: Annotated[
        str, typer.Option(help="Split to compare on: test, val, train or all.", callback=split_callback)
    ] = "test",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON to stdout.")] = False,
    allow_unreadable: Annotated[
        bool,
        typer.Option(help="Exit 0 although some images could not be read (the comparison leaves them out)."),
    ] = False,
) -> None:
    """Compare two models on the same images: AUROC (DeLong); decisions, boxes and classes (McNemar).

    Exit code 0: every image read; 1: an image unread (see --allow-unreadable), an error; 2: bad arguments.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

    from fracsight.cli import progress_bar, refuse_missing, refuse_unread, user_errors
    from fracsight.evaluation.compare import compare_models
    from fracsight.inference import NOTICE

    refuse_missing([data_dir])
    with user_errors(), progress_bar(TextColumn("Comparing"), BarColumn(), MofNCompleteColumn()) as bar:
        task = bar.add_task("compare", total=None)
        result = compare_models(
            model_a,
            model_b,
            data_dir,
            split=split,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if json_output:
        write_stdout(json.dumps(result, indent=2) + "\n")
    else:
        for line in summary_lines(result):
            typer.echo(line)
        for note in result.get("notes") or ():  # as `evaluate` prints its notes
            typer.echo(f"note: {note}")
    typer.echo(NOTICE, err=True)
    if result["failed"]:
        accepted = f"the comparison over the {result['data']['n_compared']} both read"
        refuse_unread(unread_warning(result), accepted, allowed=allow_unreadable)


def unread_warning(result: dict[str, Any]) -> str:
    """Which images a model could not read, so were left out of the comparison."""
    from fracsight.evaluation.run import unread_names

    failed, d = result["failed"], result["data"]
    named = unread_names(failed, 'all under "failed" in --json')
    return (
        f"{len(failed)} of {d['n_images']} images could not be read by one model or both and are left "
        f"out of the comparison: {named}"
    )


def _p(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def _delong(auc: dict[str, float]) -> str:
    """Two AUROCs and DeLong's test of their difference, as one phrase."""
    return (
        f"A {auc['a']:.3f}, B {auc['b']:.3f}; B - A {auc['difference']:+.3f} "
        f"(95% CI {auc['ci_low']:+.3f} to {auc['ci_high']:+.3f}), DeLong {_p(auc['p_value'])}"
    )


def _grouped(auc: dict[str, Any], units: str = "images") -> str:
    """DeLong's independent-units interval's companion, where images (or studies) come in related
    groups (a patient's)."""
    if "grouped" not in auc:
        return ""
    g = auc["grouped"]
    return (
        f"; resampling the {g['n_groups']} groups of related {units}: 95% CI {g['ci_low']:+.3f} to "
        f"{g['ci_high']:+.3f}"
    )


def _paired(what: str, block: dict[str, Any]) -> str:
    grouped = ""
    if "grouped" in block:
        n = block["grouped"]["n_groups"]
        units = "group of related images as a unit" if n == 1 else "groups of related images as units"
        grouped = f" (counting the {n} {units}: {_p(block['grouped']['p_value'])})"
    return (
        f"{what}: A {block['a']:.3f}, B {block['b']:.3f} over {block['n']} images; they differ on "
        f"{block['a_only'] + block['b_only']} (A only {block['a_only']}, B only {block['b_only']}), "
        f"McNemar {_p(block['p_value'])}{grouped}"
    )


def _model_line(key: str, model: dict[str, Any], same_name: bool) -> str:
    point = (
        f" at its {model['operating_point']!r} point ({model['threshold']:.3f})"
        if "threshold" in model
        else ""
    )
    # two bundles of one name (every run of a recipe's): which is A and which B, by what was typed
    given = f" ({model['model']})" if same_name and "model" in model else ""
    return f"{key}: {model['name']}{given}{point}"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The comparison as a few lines of text (what ``fracsight compare`` prints)."""
    d = result["data"]
    same_name = len({model["name"] for model in result["models"].values()}) == 1
    lines = [
        "; ".join(_model_line(key.upper(), model, same_name) for key, model in result["models"].items()),
        f"on {d['root']} [{d['split']}]: {d['n_compared']} images read by both"
        + (f" ({d['n_unreadable']} unreadable by one model or both, left out)" if d["n_unreadable"] else ""),
    ]
    if "auroc" in result:
        auc = result["auroc"]
        finding = result["finding"]  # "abnormality" on MURA, as `evaluate` notes
        article = "an" if finding[0] in "aeiou" else "a"
        lines += [
            f"{finding}: {result['n_fracture_labelled']} images with {article} {finding} label, "
            f"{result['n_positive']} {result['positive']}",
            f"AUROC: {_delong(auc)}" + _grouped(auc),
            "sensitivity at specificity 0.90: "
            + ", ".join(f"{k.upper()} {v:.3f}" for k, v in result["sensitivity_at_specificity_0.90"].items()),
            _paired("sensitivity at each model's point", result["sensitivity"]),
            _paired("specificity at each model's point", result["specificity"]),
            "expected calibration error: "
            + ", ".join(f"{k.upper()} {v:.3f}" for k, v in result["ece"].items()),
        ]
    if "study" in result:
        study = result["study"]
        said = (
            f"not compared: {study['not_compared']}"
            if "auroc" not in study
            else f"AUROC {_delong(study['auroc'])}" + _grouped(study["auroc"], "studies")
        )
        lines.append(
            f"study level ({study['n']} studies, {study['n_positive']} {result['positive']}; mean of the "
            f"views): {said}"
        )
    if "top_box_hits" in result:
        lines.append(_paired("top box hits a true box", result["top_box_hits"]))
        lines.append(_paired("top box overlaps a true box by IoU >= 0.1", result["top_box_iou_hits"]))
        lines.append("box AP50: " + ", ".join(f"{k.upper()} {v:.3f}" for k, v in result["box_ap50"].items()))
    if "class_top1" in result:
        lines.append(_paired("top class right", result["class_top1"]))
    return lines
