"""The table of committed objects: id, class (editable), score, margin, and a combo of the top-k alternatives.

Rows come in one of two orders (:data:`SORT_ORDERS`): the features table's own (commit order, the default) or
the review queue's uncertainty order (:func:`napari_ovsam.review.review_order`: unreviewed first, ``unknown``
first among them, then smallest margin between the first two names). Clicking the "id" header shows commit
order, clicking the "margin" header the uncertainty order; the header's arrow says which is shown.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pandas as pd
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QAbstractItemView, QComboBox, QHeaderView, QTableWidget, QTableWidgetItem

from ..features import ensure_features, topk_from_row
from ..review import margin_of, review_order

ID, CLASS, SCORE, MARGIN, ALTERNATIVES = range(5)
REVIEWED_MARK = " ✓"
SortOrder = Literal["commit", "uncertainty"]
SORT_ORDERS: tuple[SortOrder, ...] = ("commit", "uncertainty")
_SORT_COLUMNS: dict[SortOrder, int] = {"commit": ID, "uncertainty": MARGIN}
_HEADERS = (
    ("id", "Label id (✓: reviewed). Click: commit order"),
    ("class", "Class name; double-click to rename"),
    ("score", "Class probability of the name"),
    ("margin", "Best minus second-best class probability: small = the model hesitated. Click: most "
     "uncertain first (unreviewed, unknown, smallest margin, lowest score), the review keys' order"),
    ("alternatives (top-k)", "The model's best guesses; pick one to rename"),
)  # fmt: skip
_REVIEWED_COLOUR = QColor(150, 150, 150)


class ObjectsTable(QTableWidget):
    """One row per object of a features table. Editing a class cell, or picking an alternative, emits
    ``renamed(label_id, class_name)``; selecting a row emits ``picked(label_id)``; every refill emits
    ``shown(features)`` (the table shown)."""

    renamed = Signal(int, str)
    picked = Signal(int)
    shown = Signal(object)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, len(_HEADERS), parent)
        for column, (title, tip) in enumerate(_HEADERS):
            item = QTableWidgetItem(title)
            item.setToolTip(tip)
            self.setHorizontalHeaderItem(column, item)
        self.setToolTip(
            "Committed objects. Double-click a class to rename it, or pick one of the model's alternatives; "
            "renamed and accepted objects are marked reviewed (✓). Select a row to show the object. Click "
            "the margin header to list the most uncertain objects first."
        )
        self._features = ensure_features(None)
        self._order: SortOrder = "commit"
        header, rows = self.horizontalHeader(), self.verticalHeader()
        fit, stretch = QHeaderView.ResizeMode.ResizeToContents, QHeaderView.ResizeMode.Stretch
        if header is not None:
            for column, mode in (
                (ID, fit),
                (CLASS, stretch),
                (SCORE, fit),
                (MARGIN, fit),
                (ALTERNATIVES, stretch),
            ):
                header.setSectionResizeMode(column, mode)
            header.setSortIndicatorShown(True)
            header.setSectionsClickable(True)
            header.sectionClicked.connect(self._on_header)
        if rows is not None:
            rows.setVisible(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        triggers = QAbstractItemView.EditTrigger
        self.setEditTriggers(triggers.DoubleClicked | triggers.EditKeyPressed)
        self.itemChanged.connect(self._on_item_changed)
        self.itemSelectionChanged.connect(self._on_selection)
        self._show_indicator()

    # ------------------------------------------------------------------------------------------ order

    @property
    def sort_order(self) -> SortOrder:
        """How rows are ordered: ``"commit"`` (the features table's order) or ``"uncertainty"``."""
        return self._order

    def sort_by(self, order: SortOrder) -> None:
        """Show the rows in another order (see the module docstring); the selected object stays selected."""
        if order not in SORT_ORDERS:
            raise ValueError(f"Unknown sort order {order!r}: choose one of {', '.join(SORT_ORDERS)}.")
        if order != self._order:
            self._order = order
            self._refill()
        self._show_indicator()

    def _on_header(self, column: int) -> None:
        order = next((o for o, c in _SORT_COLUMNS.items() if c == column), self._order)
        self.sort_by(order)

    def _show_indicator(self) -> None:
        header = self.horizontalHeader()
        if header is not None:
            header.setSortIndicator(_SORT_COLUMNS[self._order], Qt.SortOrder.AscendingOrder)

    # ------------------------------------------------------------------------------------------ rows

    def show_features(self, features: pd.DataFrame) -> None:
        """Refill the table from a features table (see ``napari_ovsam.features``), in the chosen order."""
        self._features = ensure_features(features)
        self._refill()
        self.shown.emit(self._features)

    @property
    def features(self) -> pd.DataFrame:
        """The features table shown (a copy of what :meth:`show_features` was given, coerced)."""
        return self._features

    def _refill(self) -> None:
        records = self._features.to_dict("records")
        if self._order == "uncertainty":
            rank = {label_id: i for i, label_id in enumerate(review_order(self._features))}
            records.sort(key=lambda r: rank[int(r["label_id"])])
        selected = self.selected_label()
        self.blockSignals(True)
        try:
            self.clearSelection()
            self.clearContents()  # drops the rows' alternative pickers too (a stale one stayed drawn at 0, 0)
            self.setRowCount(len(records))
            for row, record in enumerate(records):
                self._fill_row(row, record)
        finally:
            self.blockSignals(False)
        if selected is not None:  # the same object stays selected, wherever its row went
            self.select_label(selected, notify=False)

    def _fill_row(self, row: int, record: dict) -> None:
        label_id = int(record["label_id"])
        ident = _read_only(str(label_id))
        ident.setData(Qt.ItemDataRole.UserRole, label_id)
        name = QTableWidgetItem(str(record["class_name"]))
        margin = margin_of(record)
        cells = {
            ID: ident, CLASS: name, SCORE: _read_only(_number(record["score"])), MARGIN: _read_only(_number(margin)),
        }  # fmt: skip
        if record.get("reviewed"):
            name.setToolTip("reviewed by hand")
            ident.setText(f"{label_id}{REVIEWED_MARK}")
            for item in (ident, cells[SCORE], cells[MARGIN]):
                item.setForeground(QBrush(_REVIEWED_COLOUR))
        for column, item in cells.items():
            self.setItem(row, column, item)
        self.setCellWidget(row, ALTERNATIVES, self._alternatives(label_id, record))

    def _alternatives(self, label_id: int, record: dict) -> QComboBox:
        combo = QComboBox()
        names, scores = topk_from_row(record)
        runner_up = f"{names[1]} {scores[1]:.2f}…" if len(names) > 1 and len(scores) > 1 else "—"
        combo.addItem(runner_up)  # shown while closed: the best other guess
        for name, score in zip(names, scores):
            combo.addItem(f"{name} ({score:.2f})", name)
        combo.setToolTip("Pick another class from the model's best guesses (Alt+1…5 on the selected object)")
        combo.activated.connect(lambda index: self._on_alternative(label_id, combo, index))
        return combo

    def label_id(self, row: int) -> int:
        """The label id shown in a row."""
        item = self.item(row, ID)
        if item is None:
            raise IndexError(f"No row {row} in the objects table.")
        return int(item.data(Qt.ItemDataRole.UserRole))

    def row_of(self, label_id: int) -> int | None:
        """The row showing an object, or None."""
        return next((r for r in range(self.rowCount()) if self.label_id(r) == int(label_id)), None)

    def selected_label(self) -> int | None:
        """The label id of the selected row, or None."""
        rows = {index.row() for index in self.selectedIndexes()}
        return self.label_id(min(rows)) if rows else None

    def select_label(self, label_id: int, *, notify: bool = True) -> bool:
        """Select an object's row and scroll to it; ``notify``: emit ``picked`` as a click would. False when
        the table has no such object."""
        row = self.row_of(label_id)
        if row is None:
            return False
        self.blockSignals(not notify)
        try:
            self.selectRow(row)
        finally:
            self.blockSignals(False)
        item = self.item(row, ID)
        if item is not None:
            self.scrollToItem(item)
        return True

    def pick_alternative(self, label_id: int, name: str) -> None:
        """Rename an object to one of its alternatives, as picking it in its row's combo does."""
        self.renamed.emit(int(label_id), str(name))

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == CLASS and item.text().strip():
            self.renamed.emit(self.label_id(item.row()), item.text().strip())

    def _on_alternative(self, label_id: int, combo: QComboBox, index: int) -> None:
        name = combo.itemData(index)
        if name:
            self.pick_alternative(label_id, str(name))

    def _on_selection(self) -> None:
        label_id = self.selected_label()
        if label_id is not None:
            self.picked.emit(label_id)


def _read_only(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


def _number(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "—"
    return f"{number:.2f}" if math.isfinite(number) else "—"
