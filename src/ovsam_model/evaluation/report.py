"""The evaluation report as markdown: one table per protocol, a row per method."""

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
    ("num_detections", "masks"),
)
#: Metrics on 0..1 that the markdown shows in %.
FRACTIONS = frozenset(
    {"miou", "base_iou", "novel_iou", "AP", "AP50", "AP75", "APs", "APm", "APl", "AP_base", "AP_novel"}
    | {"APr", "APc", "APf"}
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
