"""Two models on the same images: paired differences and their tests.

Evaluating two models apart gives each an AUROC with a confidence interval, and the two
intervals overlap almost always on a few hundred images, even when one model ranks better
on nearly every image. The paired view is sharper because both models read the same images:

- AUROC: DeLong, DeLong and Clarke-Pearson's test (1988), with the fast midrank computation
  of Sun and Xu (2014): the difference B - A, its standard error, 95% interval and p-value.
  DeLong takes the images as independent; where some are related (a patient's or a study's
  images, near-duplicates: the groups ``evaluate`` resamples), a 95% interval of the difference
  from a paired bootstrap over whole groups is given beside it (``auroc.grouped``);
- the decisions at each model's own operating point: sensitivity on the fractured images and
  specificity on the others, each with an exact McNemar test over the images the two models
  decide differently, and beside it, where images come in related groups, the same exact test
  with each group counted as one unit (``grouped``);
- the top box: whether it hits a true box (as ``fracsight evaluate`` counts it), with McNemar
  too, and box AP50 for each;
- two models with a class head (fracture types): whether the top class is right, with McNemar,
  over the images with a class label.

Two models that share neither head are refused: ``evaluate`` measures each model's own heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from fracsight.bundle import bundle_identity
from fracsight.data import (
    CLASS,
    FRACTURE,
    DataMismatchError,
    MissingSplitError,
    SplitLayoutError,
    load_dataset,
    split_keys,
)
from fracsight.data._files import canonical_split, relative_name
from fracsight.errors import ConfigError, DatasetError
from fracsight.evaluation.aggregate import aggregate_study_predictions, first_views, repeated_views_note
from fracsight.evaluation.metrics import _average_ranks, auroc, bootstrap_ci
from fracsight.evaluation.run import FEW_CASES, few_cases, positive_label

__all__ = ["compare_models", "delong_test", "grouped_mcnemar", "mcnemar_test"]


class NoSharedHeadError(ConfigError):
    """Two models without a head in common to compare: a bad pair of arguments (the CLI exits 2, as
    for a split the data lacks), not a failure of the comparison."""

    bad_argument = True


def delong_test(y: ArrayLike, p_a: ArrayLike, p_b: ArrayLike) -> dict[str, float | None]:
    """DeLong's test of two correlated AUROCs on the same images (labels ``y``, 1 = positive).

    Returns ``a``, ``b``, ``difference`` (b - a), its ``se``, a 95% normal interval
    (``ci_low``, ``ci_high``, within -1..1), ``z`` (None where the difference has no variance,
    the AUROCs differing all the same) and the two-sided ``p_value``.
    """
    y = np.asarray(y).astype(bool)
    scores = np.stack([np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)])
    if scores.shape[1] != y.size:
        raise ValueError(f"{scores.shape[1]} scores for {y.size} labels")
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:  # the variance of each side's components needs two of them
        raise ValueError(f"DeLong's test needs two positive and two negative images (got {m} and {n})")
    # Sun & Xu: each positive's (negative's) structural component from three sets of midranks
    v10 = np.empty((2, m))
    v01 = np.empty((2, n))
    auc = np.empty(2)
    for k in range(2):
        pos, neg = scores[k, y], scores[k, ~y]
        r_all = _average_ranks(np.concatenate([pos, neg]))
        r_pos, r_neg = _average_ranks(pos), _average_ranks(neg)
        auc[k] = (r_all[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10[k] = (r_all[:m] - r_pos) / n
        v01[k] = 1.0 - (r_all[m:] - r_neg) / m
    s = np.cov(v10) / m + np.cov(v01) / n
    variance = float(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    difference = float(auc[1] - auc[0])
    se = math.sqrt(max(variance, 0.0))
    z: float | None
    if se == 0.0 and difference == 0.0:  # identical rankings: no difference, nothing to test
        z, p_value = 0.0, 1.0
    elif se == 0.0:  # constant components (AUROC 0.5 of a constant model against 1.0): said p = 1
        # no finite z (JSON has no infinity); the p of an exact paired permutation test (each
        # image's two scores swapped), whose least value on n images this is
        z, p_value = None, min(1.0, 2.0 ** (1 - y.size))
    else:
        z = difference / se
        p_value = math.erfc(abs(z) / math.sqrt(2))
    return {
        "a": float(auc[0]),
        "b": float(auc[1]),
        "difference": difference,
        "se": se,
        # a difference of AUROCs lies in -1..1; the normal interval passed it on few images
        "ci_low": max(-1.0, difference - 1.959964 * se),
        "ci_high": min(1.0, difference + 1.959964 * se),
        "z": z,
        "p_value": p_value,
    }


def mcnemar_test(
    right_a: ArrayLike, right_b: ArrayLike, groups: Sequence[str] | None = None
) -> dict[str, Any]:
    """Exact McNemar test of two paired yes/no outcomes (e.g. each model right on each image).

    Returns the share of yes for each (``a``, ``b``, over ``n``), the images where only one of
    them is yes (``a_only``, ``b_only``) and the two-sided exact binomial ``p_value``, which
    takes the images as independent. ``groups``: each image's group of related images (a
    patient's, near-duplicates: :func:`~fracsight.data.split_keys`); where some group holds
    several, ``grouped`` adds the test that counts each group as one unit
    (:func:`grouped_mcnemar`).
    """
    a = np.asarray(right_a, dtype=bool)
    b = np.asarray(right_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"{a.size} outcomes for A against {b.size} for B")
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    discordant = a_only + b_only
    tail = sum(math.comb(discordant, k) for k in range(min(a_only, b_only) + 1))
    p_value = 1.0 if discordant == 0 else min(1.0, float(Fraction(2 * tail, 2**discordant)))
    n = int(a.size)
    result = {
        "a": float(a.mean()) if n else None,
        "b": float(b.mean()) if n else None,
        "n": n,
        "a_only": a_only,
        "b_only": b_only,
        "p_value": p_value,
    }
    if groups is not None and len(set(groups)) < n:
        result["grouped"] = grouped_mcnemar(a, b, groups)
    return result


def grouped_mcnemar(right_a: ArrayLike, right_b: ArrayLike, groups: Sequence[str]) -> dict[str, Any]:
    """McNemar's test with related images counted together: ``{n_groups, p_value}``.

    Each group's difference d = (images only A has right) - (images only B has right). When
    neither model is better, each group's d is as likely to be -d, so the p-value is the share of
    the 2^groups sign flips whose |sum of d| reaches the observed one (computed exactly, by
    convolution over the integer sums). A group of near-copies that both models read alike thus
    counts once, however many copies it holds. With one image a group it is exactly McNemar's
    exact test (:func:`mcnemar_test`'s ``p_value``).
    """
    a = np.asarray(right_a, dtype=bool)
    b = np.asarray(right_b, dtype=bool)
    if len(groups) != a.size or a.shape != b.shape:
        raise ValueError(f"{a.size} and {b.size} outcomes for {len(groups)} group keys")
    _, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    n_groups = int(index.max()) + 1 if index.size else 0
    per_image = (a & ~b).astype(np.int64) - (~a & b).astype(np.int64)
    observed = abs(int(per_image.sum()))
    d = np.abs(np.bincount(index, weights=per_image, minlength=n_groups)).astype(np.int64)
    d = d[d != 0]
    reach = int(d.sum())
    distribution = np.zeros(2 * reach + 1)  # P(sum of the flipped d = s), s from -reach to +reach
    distribution[reach] = 1.0
    for value in d:  # the support stays within +-reach: nothing rolls round the ends
        distribution = 0.5 * (np.roll(distribution, value) + np.roll(distribution, -value))
    sums = np.abs(np.arange(-reach, reach + 1))
    p_value = float(distribution[sums >= observed].sum()) if reach else 1.0
    return {"n_groups": n_groups, "p_value": min(1.0, p_value)}


def _compared_heads(predictor: Any) -> str:
    """``fracture head``, ``class head``, both, or ``no fracture or class head``."""
    kinds = (("fracture", predictor.has_fracture_head), ("class", bool(predictor.classes)))
    heads = [head for head, has in kinds if has]
    if not heads:
        return "no fracture or class head"
    return " and ".join(heads) + (" heads" if len(heads) > 1 else " head")


def compare_models(
    model_a: str | Path | None,
    model_b: str | Path | None,
    data_dir: Path,
    *,
    split: str | None = "test",
    layout: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Predict the labelled images of ``split`` with both models and compare them, paired.

    The heads both models have are compared: fracture (where the images have fracture labels)
    and N-class (class labels; top-1 right or not). Only the images both models could read are
    compared (the others are counted); each model decides at its own default operating point.
    On a data set without the split, each model is measured on the split its own training
    carved out: the two must have held out the same images, or the comparison is refused.
    """
    from fracsight.evaluation.run import leakage_note, leakage_of, model_class_index
    from fracsight.inference import NOTICE, FailedPrediction, Predictor

    split = canonical_split(split)
    predictors = [Predictor(model_a), Predictor(model_b)]
    fracture = all(p.has_fracture_head for p in predictors)
    classes = all(p.classes for p in predictors)
    if not (fracture or classes):
        # each named as typed and by its heads: two runs without a recipe are both fracsight-model v1
        said = [
            f"model {key} ({given or 'default'}: {p.name}, {_compared_heads(p)})"
            for key, p, given in zip("AB", predictors, (model_a, model_b), strict=True)
        ]
        raise NoSharedHeadError(
            f"{said[0]} and {said[1]} share no head `compare` measures: it needs two models with a "
            "fracture head, or two with a class head (`fracsight evaluate` measures each model's own heads)"
        )
    dataset = load_dataset(Path(data_dir), layout)
    if classes:  # a data class the model does not know is refused, naming it and which of the two
        for key, predictor, given in zip("AB", predictors, (model_a, model_b), strict=True):
            try:
                model_class_index(dataset.class_names, predictor.classes)
            except DatasetError as e:
                raise type(e)(f"model {key} ({given or 'default'}): {e}") from None
    held, missing = _held_out_both(dataset, split, predictors, (model_a, model_b), Path(data_dir))
    chosen = [h.samples for h in held]
    if [s.path for s in chosen[0]] != [s.path for s in chosen[1]]:
        raise SplitLayoutError(  # the user's to correct (--split all): exit 2
            f"{data_dir} has no {split!r} split of its own, and the two models' training runs held out "
            "different images as theirs: compare them on a data set with its own splits, or on all of "
            "it with --split all"
        )
    notes = _seen_notes(split, held, dataset, (model_a, model_b), [p.spec for p in predictors])
    if missing is not None:
        stranger, owner = "AB"[missing], "BA"[missing]
        notes.append(
            f"model {stranger} ({(model_a, model_b)[missing] or 'default'}) was not trained on this data "
            f"set: both are measured on the {split!r} split that model {owner}'s training run carved out "
            f"of it (group-aware, seed {held[1 - missing].seed}), which model {stranger} was not trained on"
        )
    notes += _calibrated_here_notes(
        split, [p.spec for p in predictors], (model_a, model_b), data_dir, dataset
    )
    if bundle_identity(predictors[0].bundle_dir) == bundle_identity(predictors[1].bundle_dir):
        # by content: a copy or a .zip of one bundle is the same model (its folder a new one)
        notes.append(
            f"A and B are the same bundle ({model_a or 'default'}, {model_b or 'default'}): every "
            "difference in this comparison is zero by construction"
        )
    notes += _head_notes(predictors, tuple(dataset.class_names.get(FRACTURE, ())), (model_a, model_b))
    for label, shared, has in (
        (FRACTURE, fracture, lambda p: p.has_fracture_head),
        (CLASS, classes, lambda p: bool(p.classes)),
    ):  # evaluate says the data's labels a model cannot measure; compare left them out unsaid
        lacking = [
            f"{key} ({given or 'default'})"
            for key, predictor, given in zip("AB", predictors, (model_a, model_b), strict=True)
            if not has(predictor)
        ]
        if not shared and label in dataset.class_names and len(lacking) == 1:
            notes.append(
                f"the data's {label} labels are not compared: model {lacking[0]} has no {label} head"
            )
    leakage = leakage_of(held[0], dataset, split)  # the two runs held out the same images (checked above)
    if leakage:
        notes.append(leakage_note(leakage, data_dir, any(h.own for h in held)))
    wanted = ([FRACTURE] if fracture else []) + ([CLASS] if classes else [])
    samples = [s for s in chosen[0] if any(task in s.labels for task in wanted)]
    if not samples:
        labels = " or ".join(f"{task} label" for task in wanted)
        raise DataMismatchError(f"{data_dir} [{split or 'all'}] has no image with a {labels}")

    total = 2 * len(samples)
    sources = [relative_name(s.path, dataset.root) for s in samples]  # as `evaluate` names them
    outputs: list[list[Any]] = []
    for k, predictor in enumerate(predictors):
        preds = []
        stream = predictor.predict_many([s.path for s in samples], batch_size=16, names=sources)
        for i, pred in enumerate(stream):
            preds.append(pred)
            if progress:
                progress(k * len(samples) + i + 1, total)
        outputs.append(preds)
    both = [
        i for i in range(len(samples)) if not any(isinstance(preds[i], FailedPrediction) for preds in outputs)
    ]
    if not both:
        from fracsight.evaluation.run import unread_names

        raise DatasetError(
            f"none of the {len(samples)} images of {data_dir} could be read by both models: "
            + unread_names(_unread(outputs), "`fracsight audit DATA` lists the ones no model reads")
        )
    kept = [samples[i] for i in both]
    pairs = [[preds[i] for i in both] for preds in outputs]
    result: dict[str, Any] = {
        "models": {
            key: _model_block(predictor, given)
            for key, predictor, given in zip("ab", predictors, (model_a, model_b), strict=True)
        },
        "data": {
            "root": str(data_dir),
            "split": split or "all",
            "n_images": len(samples),
            "n_compared": len(kept),
            "n_unreadable": len(samples) - len(kept),
            **({"leakage": leakage.to_dict()} if leakage is not None else {}),
        },
        "failed": _unread(outputs),
    }
    if notes:
        result["notes"] = notes
    where = f"{data_dir} [{split or 'all'}]"
    not_compared = None  # why the fracture head is not compared, where it is not
    if fracture:
        index = [i for i, s in enumerate(kept) if FRACTURE in s.labels]
        n_positive = sum(int(kept[i].labels[FRACTURE]) for i in index)
        positive = positive_label(dataset, predictors[0]) if index else ""
        if index and min(n_positive, len(index) - n_positive) < 2:
            # said, not raised: it refused the whole comparison, the class head's (which these
            # images measure, as `evaluate` does) with it
            not_compared = (
                f"the fracture head is not compared: {n_positive} {positive} and {len(index) - n_positive} "
                "other images read by both models; its comparison needs two of each at least"
            )
            result.setdefault("notes", []).append(not_compared)
            index = []
        if index:
            chosen_preds = [[preds[i] for i in index] for preds in pairs]
            kept_labelled = [kept[i] for i in index]
            result.update(_fracture_comparison(kept_labelled, chosen_preds, predictors, positive))
            few = _few_cases_note(result, positive)
            if few:
                result.setdefault("notes", []).append(few)
            repeats = result.get("study", {}).get("repeats_left_out")
            if repeats:
                result.setdefault("notes", []).append(repeated_views_note(repeats, "the study comparison"))
    if classes:
        names = dataset.class_names.get(CLASS, ())
        labelled = [i for i, s in enumerate(kept) if CLASS in s.labels]
        if labelled:
            right = [
                [pr[i].classification.predicted == names[kept[i].labels[CLASS]] for i in labelled]
                for pr in pairs
            ]
            keys = split_keys([kept[i] for i in labelled])
            result["class_top1"] = mcnemar_test(*right, keys)
    if not {"auroc", "class_top1"} & set(result):
        raise DatasetError(
            f"{where}: no image both models read has a label they can be compared on"
            + (f" ({not_compared})" if not_compared else "")
        )
    result["notice"] = NOTICE  # as the predictions' JSON (fracsight compare --json)
    return result


def _head_notes(predictors: Sequence[Any], label_names: tuple[str, ...], given: tuple[Any, Any]) -> list[str]:
    """``evaluate``'s note for each model whose binary head finds something else than the data's
    label (the packaged fracture model against a MURA-trained one on MURA): the comparison is then
    also one of what each model was taught to find."""
    from fracsight.evaluation.run import head_label_mismatch

    notes = []
    for key, predictor, typed in zip("AB", predictors, given, strict=True):
        note = head_label_mismatch(predictor, label_names)
        if note:
            notes.append(f"model {key} ({typed or 'default'}): {note}")
    return notes


def _held_out_both(
    dataset: Any, split: str | None, predictors: Sequence[Any], given: tuple[Any, Any], data_dir: Path
) -> tuple[list[Any], int | None]:
    """Each model's :func:`~fracsight.evaluation.run.held_out` images of ``split``. A data set
    without the split that one of the two was trained on has it carved out as that model's run
    did: the other, which never trained on it, is measured on the same images (the obvious
    comparison of the shipped model with one trained here was refused, leaving only --split all,
    with the other's training images in it); the index of that other model is returned too."""
    from fracsight.evaluation.run import HeldOut, held_out, training_data_around

    held: list[Any] = []
    for key, predictor, typed in zip("AB", predictors, given, strict=True):
        try:
            held.append(held_out(dataset, split, predictor.spec, data_dir))
        except MissingSplitError as e:  # "the model was not trained on" it: say which of the two
            held.append(MissingSplitError(f"model {key} ({typed or 'default'}): {e}"))
    failed = [i for i, h in enumerate(held) if isinstance(h, MissingSplitError)]
    if (
        len(failed) == 1
        and held[1 - failed[0]].own
        and training_data_around(predictors[failed[0]].spec, data_dir) is None
    ):
        owner = held[1 - failed[0]]
        held[failed[0]] = HeldOut(owner.samples, owner.seed, False, owner.carved)
        return held, failed[0]
    if failed:
        raise held[failed[0]]
    return held, None


def _seen_notes(
    split: str | None, held: Sequence[Any], dataset: Any, given: tuple[Any, Any], specs: Sequence[Any]
) -> list[str]:
    """A note for each model compared on images its own training saw (``--split train``, ``val``
    or ``all`` of the data set it was trained on: ``held[i].own``): its figures flatter it, and
    the paired difference leans its way; ``evaluate`` says so, ``compare`` said nothing."""
    from fracsight.evaluation.run import held_out_advice, seen_by_model

    return [
        f"model {key} ({typed or 'default'}) is measured on {seen}: its figures flatter it and the "
        f"difference may lean its way; {held_out_advice(h, dataset)}"
        for key, h, typed, spec in zip("AB", held, given, specs, strict=True)
        if h.own and (seen := seen_by_model(split, spec))
    ]


def _calibrated_here_notes(
    split: str | None, specs: Sequence[Any], given: tuple[Any, Any], data_dir: Path, dataset: Any
) -> list[str]:
    """For each model whose calibration and operating points were fitted on this data (other
    data than its network's), :func:`~fracsight.evaluation.run.calibration_data_note`."""
    from fracsight.evaluation.run import calibration_data_note

    return [
        f"model {key} ({typed or 'default'}): {note}"
        for key, spec, typed in zip("AB", specs, given, strict=True)
        if (note := calibration_data_note(spec, Path(data_dir), dataset, split))
    ]


def _unread(outputs: list[list[Any]]) -> list[dict[str, Any]]:
    """The images left out because a model could not read them, as ``evaluate`` lists its
    ``failed`` (``source``, ``error_code``, ``error``), each once, with the ``models`` that failed."""
    from fracsight.inference import FailedPrediction

    failed = []
    for preds in zip(*outputs, strict=True):
        unread = {
            key: pred for key, pred in zip("ab", preds, strict=True) if isinstance(pred, FailedPrediction)
        }
        if unread:
            failed.append({**next(iter(unread.values())).to_dict(), "models": list(unread)})
    return failed


def _model_block(predictor: Any, given: str | Path | None) -> dict[str, Any]:
    """The model as the figures name it, and as the command line gave it (``model``): two runs of
    one recipe have the same name and version."""
    block: dict[str, Any] = {"name": predictor.name, "model": "default" if given is None else str(given)}
    point = predictor.operating_point
    if point is not None:
        block.update(operating_point=point.name, threshold=point.threshold)
    if predictor.classes:
        block["classes"] = list(predictor.classes)
    return block


def _fracture_comparison(
    kept: list[Any], pairs: list[list[Any]], predictors: list[Any], positive: str
) -> dict[str, Any]:
    """The fracture head's paired figures over the fracture-labelled images ``kept``, read by the
    two models as ``pairs`` (one list of predictions per model, in the order of ``kept``);
    ``positive``: what the data call a positive image, whose finding the figures are worded by."""
    from fracsight.evaluation.calibration import expected_calibration_error
    from fracsight.evaluation.run import true_boxes
    from fracsight.evaluation.thresholds import sensitivity_at_specificity
    from fracsight.explain import average_precision_boxes, top_box_hits
    from fracsight.inference.results import finding_of

    pa, pb = pairs
    y = np.array([s.labels[FRACTURE] for s in kept])  # two of each at least: the caller saw to it
    prob = [np.array([p.fracture_probability for p in preds]) for preds in (pa, pb)]
    # the decision as `evaluate` counts it: the probability at the point's threshold
    said = [p >= predictor.operating_point.threshold for p, predictor in zip(prob, predictors, strict=True)]
    # related images (hashing every file for exact copies: once): one unit in the grouped figures
    keys = np.array(split_keys(kept), dtype=object)
    result: dict[str, Any] = {
        "finding": finding_of(positive),  # "abnormality" on MURA: the binary label is not fracture
        "positive": positive,
        "n_fracture_labelled": len(kept),
        "n_positive": int(y.sum()),
        "auroc": {**delong_test(y, prob[0], prob[1]), **_grouped_difference(keys, y, prob)},
        "sensitivity_at_specificity_0.90": {
            key: sensitivity_at_specificity(y, p, 0.9) for key, p in zip("ab", prob, strict=True)
        },
        "sensitivity": mcnemar_test(said[0][y == 1], said[1][y == 1], keys[y == 1]),
        "specificity": mcnemar_test(~said[0][y == 0], ~said[1][y == 0], keys[y == 0]),
        "ece": {key: expected_calibration_error(y, p)[0] for key, p in zip("ab", prob, strict=True)},
    }
    study = _study_comparison(kept, y, prob, [p.metadata.content_sha256 for p in pa], keys)
    if study:
        result["study"] = study
    boxed = [i for i, s in enumerate(kept) if s.boxes and s.labels[FRACTURE] == 1]
    if boxed:
        hits, by_iou, ap50 = [], [], {}
        for key, preds in zip("ab", (pa, pb), strict=True):
            trues = [true_boxes(kept[i], preds[i]) for i in boxed]
            boxes = [list(preds[i].boxes) for i in boxed]
            found = [top_box_hits(b, t) for b, t in zip(boxes, trues, strict=True)]
            hits.append([any(f) for f in found])
            by_iou.append([f[0] for f in found])
            ap50[key] = average_precision_boxes(boxes, trues, iou_thr=0.5)
        result["top_box_hits"] = mcnemar_test(*hits, keys[boxed])
        # a box of the whole film holds every centre: a perfect "hit" by the centre rule alone
        result["top_box_iou_hits"] = mcnemar_test(*by_iou, keys[boxed])
        result["box_ap50"] = ap50
    return result


def _few_cases_note(result: Mapping[str, Any], positive: str) -> str | None:
    """``evaluate``'s caution, for the comparison: on a few cases DeLong's interval understates the
    uncertainty (two models perfect on 6 images showed +0.000 to +0.000 without a word)."""
    study = result.get("study")
    few = few_cases(
        {
            "images": {"n": result["n_fracture_labelled"], "n_positive": result["n_positive"]},
            "studies": study if study and "auroc" in study else None,  # else not compared: said
        },
        positive,
    )
    if not few:
        return None
    return (
        f"fewer than {FEW_CASES} {positive} or other cases in: {'; '.join(few)}: the intervals and p-values "
        "understate the uncertainty (two perfect models get +0.000 to +0.000); compare on more"
    )


def _grouped_difference(keys: Sequence[str], y: np.ndarray, prob: list[np.ndarray]) -> dict[str, Any]:
    """``{"grouped": {n_groups, ci_low, ci_high}}``: the 95% interval of AUROC B - A from a paired
    bootstrap that resamples whole groups of related images (``keys``, each image's
    :func:`~fracsight.data.split_keys`, as ``evaluate``'s intervals do); empty where every image is
    a group of its own. FracAtlas test: 687 images in 535 groups, one of 77."""
    from fracsight.evaluation.report import resamples_vary

    keys = list(keys)
    # every image a group of its own: the plain paired test says it; and no interval where every
    # draw is the same (one group, or one all fractured and one all other)
    if len(set(keys)) == len(keys) or not resamples_vary(y, keys):
        return {}

    def difference(labels: np.ndarray, rows: np.ndarray) -> float:
        i = rows.astype(np.int64)
        return auroc(labels, prob[1][i]) - auroc(labels, prob[0][i])

    low, high = bootstrap_ci(difference, y, np.arange(len(y), dtype=np.float64), groups=keys)
    return {"grouped": {"n_groups": len(set(keys)), "ci_low": low, "ci_high": high}}


def _study_comparison(
    kept: list[Any], y: np.ndarray, prob: list[np.ndarray], contents: list[str | None], keys: Sequence[str]
) -> dict[str, Any] | None:
    """DeLong's test over the studies (MURA's several views of one examination), each study's
    probability the mean of its images' as ``evaluate``'s study level takes it: over the images, the
    views of one study count as independent evidence and the p-value comes out too small. None where
    the data have no studies of more than one image; ``not_compared`` (why) where there are fewer than
    two studies of either label.
    A view that repeats an earlier one of its study (``contents``) counts once, as in ``evaluate``.
    ``keys``: each image's group of related images (its patient): a patient's studies are resampled
    together for the grouped interval, as ``evaluate``'s study-level intervals are."""

    ids = [s.study_id or s.image_id for s in kept]
    if not any(s.study_id for s in kept) or len(set(ids)) == len(ids):
        return None
    views = first_views(ids, contents)
    group_of: dict[Hashable, str] = {}
    for sid, key in zip(ids, keys, strict=True):
        group_of.setdefault(sid, str(key))
    ids = [sid for sid, v in zip(ids, views, strict=True) if v]
    y, prob = y[views], [p[views] for p in prob]
    studies, labels, study_a = aggregate_study_predictions(ids, y, prob[0])
    study_b = aggregate_study_predictions(ids, y, prob[1])[2]
    if min(int(labels.sum()), int((1 - labels).sum())) < 2:  # said, not left out without a word
        return {
            "n": len(labels),
            "n_positive": int(labels.sum()),
            "not_compared": "two studies of each label needed",
        }
    groups = [group_of[sid] for sid in studies]
    auc = {**delong_test(labels, study_a, study_b), **_grouped_difference(groups, labels, [study_a, study_b])}
    out = {"n": len(labels), "n_positive": int(labels.sum()), "method": "mean", "auroc": auc}
    if not views.all():  # as evaluate says it
        out["repeats_left_out"] = int((~views).sum())
    return out
