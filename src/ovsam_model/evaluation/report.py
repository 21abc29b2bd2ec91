"""The evaluation report as markdown: one table per protocol, a row per method (the automatic protocol: one
table per part of it, ``automatic_tables``)."""

from __future__ import annotations

from typing import Any

GT_COLUMNS = (
    ("miou", "mIoU"),
    ("acc", "Acc"),
    ("base_iou", "IoU base"),
    ("novel_iou", "IoU novel"),
    ("base_acc", "Acc base"),
    ("novel_acc", "Acc novel"),
    ("count", "instances"),
)
AP_COLUMNS = (
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
    ("APs", "APs"),
    ("APm", "APm"),
    ("APl", "APl"),
    ("AP_base", "AP base"),
    ("AP_novel", "AP novel"),
    ("APr", "APr"),
    ("APc", "APc"),
    ("APf", "APf"),
    ("AR", "AR"),
    ("num_detections", "masks"),
)
AUTOMATIC_AP_COLUMNS = (("AP", "AP"), ("AP50", "AP50"), ("AR", "AR"), ("num_detections", "masks"))
AUTOMATIC_ROWS = (
    ("class_aware_nms", "class_aware", "class-aware NMS", "class-aware"),
    ("class_aware_nms", "class_agnostic", "class-aware NMS", "class-agnostic"),
    ("class_agnostic_nms", "class_aware", "class-agnostic NMS, named after", "class-aware"),
    ("class_agnostic_nms", "class_agnostic", "class-agnostic NMS, named after", "class-agnostic"),
)
#: Metrics on 0..1 that the markdown shows in %.
FRACTIONS = frozenset(
    {"miou", "base_iou", "novel_iou", "AP", "AP50", "AP75", "APs", "APm", "APl", "AP_base", "AP_novel"}
    | {"APr", "APc", "APf", "AR", "precision", "recall", "recall_at_precision", "named_right"}
)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key in FRACTIONS:
        return "n/a" if value < 0 else f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def markdown_report(report: dict[str, Any]) -> str:
    """One table per protocol, a row per method; IoU, accuracy and AP in %."""
    lines = [
        f"# Evaluation on `{report['ann']}`",
        "",
        f"{report['num_images']} images, {report['vocabulary_size']} classes, split: {report['split']}. "
        "IoU, accuracy and AP in %.",
        "",
    ]
    for protocol in report["protocols"]:
        if protocol == "automatic":
            lines += automatic_tables(report)
            continue
        rows = {name: m["results"].get(protocol, {}) for name, m in report["methods"].items()}
        spec = AP_COLUMNS if protocol == "det-box" else GT_COLUMNS
        columns = [(k, title) for k, title in spec if any(k in r for r in rows.values())]
        lines += [
            f"## {protocol}",
            "",
            "| method | " + " | ".join(t for _, t in columns) + " |",
            "|---" * (len(columns) + 1) + "|",
        ]
        for name, result in rows.items():
            label = report["methods"][name]["method"]
            cells = [_cell(k, result.get(k)) for k, _ in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def automatic_tables(report: dict[str, Any]) -> list[str]:
    """The automatic protocol's markdown: mask AP beside the baseline, "find all" per class, naming labels."""
    entries = {
        m["method"]: m["results"]["automatic"]
        for m in report["methods"].values()
        if "automatic" in m["results"]
    }
    lines = [
        "## automatic: mask AP",
        "",
        "| method | proposals | matching | " + " | ".join(t for _, t in AUTOMATIC_AP_COLUMNS) + " |",
        "|---" * (len(AUTOMATIC_AP_COLUMNS) + 3) + "|",
    ]
    baseline = None
    for label, result in entries.items():
        for mode, match, proposals, matching in AUTOMATIC_ROWS:
            cells = [_cell(k, result[mode][match].get(k)) for k, _ in AUTOMATIC_AP_COLUMNS]
            lines.append(f"| {label} | {proposals} | {matching} | " + " | ".join(cells) + " |")
        baseline = result["otsu_watershed"]["class_agnostic"]
    if baseline is not None:
        cells = [_cell(k, baseline.get(k)) for k, _ in AUTOMATIC_AP_COLUMNS]
        lines.append("| Otsu + watershed | – | class-agnostic | " + " | ".join(cells) + " |")
    lines += ["", "## automatic: find all <class> (mask IoU >= 0.5)", ""]
    lines += [
        "| method | class | precision | recall | recall at precision >= 0.85 | found | predicted | objects |",
        "|---" * 8 + "|",
    ]
    for label, result in entries.items():
        for name, counts in result["find_all"].items():
            cells = [
                _cell(k, counts.get(k))
                for k in ("precision", "recall", "recall_at_precision", "found", "predicted", "objects")
            ]
            lines.append(f"| {label} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "## automatic: naming the true labels", ""]
    lines += ["| method | named right | labels | per class |", "|---" * 4 + "|"]
    for label, result in entries.items():
        naming = result["naming"]
        per_class = ", ".join(
            f"{name} {_cell('named_right', value)}" for name, value in naming["per_class"].items()
        )
        cells = [_cell("named_right", naming["named_right"]), str(naming["labels"]), per_class]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, result in entries.items():
        settings = ", ".join(f"{k} {v}" for k, v in result["settings"].items())
        lines += [
            "",
            f"{label} settings: {settings}; Otsu + watershed: "
            + ", ".join(f"{k} {v}" for k, v in result["baseline"].items())
            + ".",
        ]
    lines.append("")
    return lines
