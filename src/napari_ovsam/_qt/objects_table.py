"""The table of committed objects: id, class (editable), score, and a combo of the top-k alternatives."""

from __future__ import annotations

from typing import Any

import pandas as pd
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QComboBox, QHeaderView, QTableWidget, QTableWidgetItem

from ..features import topk_from_row

ID, CLASS, SCORE, ALTERNATIVES = range(4)
REVIEWED_MARK = " ✓"


class ObjectsTable(QTableWidget):
    """One row per object of a features table. Editing a class cell, or picking an alternative, emits
    ``renamed(label_id, class_name)``; selecting a row emits ``picked(label_id)``."""

    renamed = Signal(int, str)
    picked = Signal(int)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, 4, parent)
        self.setHorizontalHeaderLabels(["id", "class", "score", "alternatives (top-k)"])
        self.setToolTip(
            "Committed objects. Double-click a class to rename it, or pick one of the model's alternatives; "
            "renamed objects are marked reviewed (✓). Select a row to show the object."
        )
        header, rows = self.horizontalHeader(), self.verticalHeader()
        fit, stretch = QHeaderView.ResizeMode.ResizeToContents, QHeaderView.ResizeMode.Stretch
        for column, mode in ((ID, fit), (CLASS, stretch), (SCORE, fit), (ALTERNATIVES, stretch)):
            if header is not None:
                header.setSectionResizeMode(column, mode)
        if rows is not None:
            rows.setVisible(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        triggers = QAbstractItemView.EditTrigger
        self.setEditTriggers(triggers.DoubleClicked | triggers.EditKeyPressed)
        self.itemChanged.connect(self._on_item_changed)
        self.itemSelectionChanged.connect(self._on_selection)

    def show_features(self, features: pd.DataFrame) -> None:
        """Refill the table from a features table (see ``napari_ovsam.features``)."""
        self.blockSignals(True)
        try:
            self.clearContents()  # drops the rows' alternative pickers too (a stale one stayed drawn at 0, 0)
            self.setRowCount(len(features))
            for row, record in enumerate(features.to_dict("records")):
                self._fill_row(row, record)
        finally:
            self.blockSignals(False)

    def _fill_row(self, row: int, record: dict) -> None:
        label_id = int(record["label_id"])
        ident = QTableWidgetItem(str(label_id))
        ident.setFlags(ident.flags() & ~Qt.ItemFlag.ItemIsEditable)
        ident.setData(Qt.ItemDataRole.UserRole, label_id)
        name = QTableWidgetItem(str(record["class_name"]))
        if record.get("reviewed"):
            name.setToolTip("reviewed by hand")
            ident.setText(f"{label_id}{REVIEWED_MARK}")
        score = QTableWidgetItem(f"{float(record['score']):.2f}")
        score.setFlags(score.flags() & ~Qt.ItemFlag.ItemIsEditable)
        for column, item in ((ID, ident), (CLASS, name), (SCORE, score)):
            self.setItem(row, column, item)
        self.setCellWidget(row, ALTERNATIVES, self._alternatives(label_id, record))

    def _alternatives(self, label_id: int, record: dict) -> QComboBox:
        combo = QComboBox()
        names, scores = topk_from_row(record)
        runner_up = f"{names[1]} {scores[1]:.2f}…" if len(names) > 1 else "—"
        combo.addItem(runner_up)  # shown while closed: the best other guess
        for name, score in zip(names, scores):
            combo.addItem(f"{name} ({score:.2f})", name)
        combo.setToolTip("Pick another class from the model's best guesses")
        combo.activated.connect(lambda index: self._on_alternative(label_id, combo, index))
        return combo

    def label_id(self, row: int) -> int:
        """The label id shown in a row."""
        item = self.item(row, ID)
        if item is None:
            raise IndexError(f"No row {row} in the objects table.")
        return int(item.data(Qt.ItemDataRole.UserRole))

    def selected_label(self) -> int | None:
        """The label id of the selected row, or None."""
        rows = {index.row() for index in self.selectedIndexes()}
        return self.label_id(min(rows)) if rows else None

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == CLASS and item.text().strip():
            self.renamed.emit(self.label_id(item.row()), item.text().strip())

    def _on_alternative(self, label_id: int, combo: QComboBox, index: int) -> None:
        name = combo.itemData(index)
        if name:
            self.renamed.emit(label_id, str(name))

    def _on_selection(self) -> None:
        label_id = self.selected_label()
        if label_id is not None:
            self.picked.emit(label_id)
