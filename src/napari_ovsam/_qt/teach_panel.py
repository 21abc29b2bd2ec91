"""``TeachPanel``: the classes the model names from, with how many examples teach each, and the controls
to teach it new ones (see :mod:`napari_ovsam.examples`, where the bookkeeping lives).

"Learn from my labels" (on by default) makes every committed, renamed, re-picked or accepted object an
example of its class. A class added by name has no example yet: it becomes the name of the next commits
("Name next commits"), so the user teaches it by clicking a few of its objects and committing them, as in
annotation tools where one picks a label and then draws; renaming an object to it in the objects table
teaches it too. Examples are kept with the labels layer (``metadata['ovsam']['examples']``, written next to an
exported COCO file) and can be saved to and loaded from a file, for another image or session; examples of
another model are refused (a file) or kept unused (a layer's), and the panel says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .. import examples, examples_files
from ..examples import METADATA_KEY
from ..session import AnnotationSession
from .controls import button, row
from .status import StatusPanel

MODEL_CHOICE = "the model's choice"
KINDS = {"vocabulary": "vocabulary", "examples": "examples only", "added": "added, no example yet"}
FILTER = "Examples (*.examples.safetensors *.safetensors);;All files (*)"


class TeachPanel(QWidget):
    """The Teach tab (see the module docstring).

    Args:
        session: holds the examples (``session.teaching``, each target's ``examples``). status: where to
        report. labels_layer: the chosen image's labels layer (or None), whose metadata keeps its examples.
    """

    def __init__(
        self, *, session: AnnotationSession, status: StatusPanel, labels_layer: Callable[[], Any]
    ) -> None:
        super().__init__()
        self._session, self._status, self._labels_layer = session, status, labels_layer
        self._adopted: Any = None  # the labels layer whose stored examples were taken in last
        self._notice = ""  # the last refusal, shown until the next action succeeds
        layout = QVBoxLayout(self)
        self._learn = QCheckBox("Learn from my labels")
        self._learn.setChecked(session.teaching.learn)
        self._learn.setToolTip(
            "Committed, renamed and accepted objects teach the model their class (objects named "
            "'unknown' do not)"
        )
        layout.addWidget(self._learn)
        self._classes = QTableWidget(0, 3)
        self._classes.setHorizontalHeaderLabels(["class", "examples", "from"])
        self._classes.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._classes.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self._classes.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._classes.setToolTip("The classes objects are named from, and the examples that teach each")
        header, rows = self._classes.horizontalHeader(), self._classes.verticalHeader()
        if header is not None:
            header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
            header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
            header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        if rows is not None:
            rows.setVisible(False)
        layout.addWidget(self._classes, stretch=1)
        self._new_class = QLineEdit()
        self._new_class.setPlaceholderText("new class, e.g. mitotic")
        self._add = button("Add class", "Add a class the model does not know; the next commits get its name")
        layout.addLayout(row(self._new_class, self._add, stretch=0))
        self._commit_class = QComboBox()
        self._commit_class.setToolTip(
            "The class your next commits are named (and marked reviewed); the model's choice names them itself"
        )
        layout.addLayout(row(QLabel("Name next commits"), self._commit_class, stretch=1))
        self._forget = button(
            "Remove examples", "Stop teaching the selected class (objects keep their names)"
        )
        self._save = button("Save…", "Write the examples to a file, for another image or session")
        self._load = button("Load…", "Add the examples of a file to this image's labels")
        layout.addLayout(row(self._forget, self._save, self._load, stretch=None))
        self._info = QLabel()
        self._info.setWordWrap(True)
        layout.addWidget(self._info)
        self._learn.toggled.connect(self._on_learn)
        self._add.clicked.connect(lambda: self.add_class())
        self._new_class.returnPressed.connect(lambda: self.add_class())
        self._commit_class.activated.connect(lambda _: self._on_commit_class())
        self._forget.clicked.connect(lambda: self.forget_class())
        self._save.clicked.connect(lambda: self.save_examples())
        self._load.clicked.connect(lambda: self.load_examples())
        session.teaching.listeners.append(self.refresh)
        self.refresh()

    # ------------------------------------------------------------------------------------------ actions

    def add_class(self, name: str | None = None) -> str | None:
        """Add a class by name (default: the typed one); the next commits get its name. None if refused."""
        text = self._new_class.text() if name is None else name
        known = [row[0] for row in self._rows()]
        try:
            added = self._session.teaching.add_class(text, known)
        except ValueError as error:
            self._refuse(str(error))
            return None
        self._new_class.clear()
        self._session.teaching.set_commit_class(added)
        self.refresh()
        self._say(
            f"Class '{added}' added: your next commits are named '{added}' (or rename objects to it in the "
            "objects table); a few examples teach it."
        )
        return added

    def forget_class(self, name: str | None = None) -> int | None:
        """Remove the examples of a class (default: the selected one); objects keep their names."""
        name = name or self._selected_class()
        if name is None:
            self._refuse("Select a class in the table first.")
            return None
        dropped = examples.forget_class(self._session, name)
        self._say(f"Removed {dropped} example(s) of '{name}'; its objects keep their names.")
        return dropped

    def save_examples(self, path: str | None = None) -> int | None:
        """Write the examples the model names from to ``path`` (default: ask)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save examples", "my.examples.safetensors", FILTER)
            if not path:
                return None
        try:
            saved = examples_files.save_examples(self._session, path)
        except (ValueError, OSError) as error:
            self._refuse(f"Examples not saved: {error}")
            return None
        self._say(f"Saved {saved} example(s) to {path}.")
        return saved

    def load_examples(self, path: str | None = None) -> int | None:
        """Add the examples of a file (default: ask) to the chosen image's labels; refused, with nothing
        changed, for another model's, a corrupted or a foreign file."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load examples", "", FILTER)
            if not path:
                return None
        try:
            loaded = examples_files.load_examples(self._session, path)
        except (ValueError, OSError) as error:
            self._refuse(f"Examples not loaded: {error}")
            return None
        self._say(f"Loaded {loaded} example(s) from {path}.")
        return loaded

    # ------------------------------------------------------------------------------------------ view

    def on_image(self) -> None:
        """The chosen image (and its labels layer) changed: show its classes (see :meth:`refresh`)."""
        self.refresh()

    def refresh(self) -> None:
        """Show the classes and counts; take in the examples a labels layer seen for the first time carries
        (its metadata, or the file next to the COCO file it was opened from), then keep its metadata
        pointing at its examples."""
        if self._adopt():
            return  # the session told its listeners, this panel included
        self._keep_in_layer()
        rows = self._rows()
        self._classes.setRowCount(len(rows))
        for i, (name, count, kind) in enumerate(rows):
            for column, text in enumerate((name, str(count), KINDS[kind])):
                item = QTableWidgetItem(text)
                if column == 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self._classes.setItem(i, column, item)
        self._fill_commit_classes([r[0] for r in rows])
        self._info.setText("\n".join(t for t in (self._notice, self._summary(rows)) if t))

    def _rows(self) -> list[tuple[str, int, str]]:
        try:
            return examples.class_counts(self._session)
        except ValueError:  # a model that cannot learn: its vocabulary only
            vocabulary = self._session.vocabulary
            return [(n, 0, "vocabulary") for n in (vocabulary.names if vocabulary is not None else [])]

    def _summary(self, rows: list[tuple[str, int, str]]) -> str:
        total = sum(r[1] for r in rows)
        taught = sum(1 for r in rows if r[1])
        text = (
            f"{total} example(s) of {taught} class(es) teach the model."
            if total
            else ("No examples yet: commit or rename objects to teach the model their class.")
        )
        if self._session.predictor is not None and not examples.supports_examples(self._session.predictor):
            text = "This model cannot learn from examples."
        if self._session.teaching.problem:
            text += " " + self._session.teaching.problem
        foreign = examples.foreign_count(self._session) if total or self._session.targets else 0
        if foreign:
            text += (
                f" {foreign} example(s) of another model are kept but not used (load that model to use them)."
            )
        return text

    def _fill_commit_classes(self, names: list[str]) -> None:
        current = self._session.teaching.commit_class
        self._commit_class.blockSignals(True)
        try:
            self._commit_class.clear()
            self._commit_class.addItem(MODEL_CHOICE)
            for name in names:
                self._commit_class.addItem(name)
            index = self._commit_class.findText(current) if current else 0
            self._commit_class.setCurrentIndex(max(index, 0))
        finally:
            self._commit_class.blockSignals(False)

    def _adopt(self) -> bool:
        """Take in the examples of a labels layer not seen before; True if the session's examples changed."""
        layer, target = self._labels_layer(), self._session.target
        if layer is None or target is None or layer.data is not target.labels or layer is self._adopted:
            return False
        self._adopted = layer
        book, problem = examples_files.layer_examples(layer.metadata)
        if problem:
            self._refuse(problem)
        if book is None or book is target.examples:
            return False
        target.examples.merge(book)  # a copy: a duplicated layer's examples are not shared
        self._session.sync_examples()
        return True

    def _keep_in_layer(self) -> None:
        layer, target = self._labels_layer(), self._session.target
        if layer is not None and target is not None and layer.data is target.labels:
            layer.metadata.setdefault("ovsam", {})[METADATA_KEY] = target.examples

    def _selected_class(self) -> str | None:
        rows = {index.row() for index in self._classes.selectedIndexes()}
        item = self._classes.item(min(rows), 0) if rows else None
        return item.text() if item is not None else None

    def _on_learn(self, checked: bool) -> None:
        self._session.teaching.learn = bool(checked)
        self._say(
            "Committed, renamed and accepted objects teach the model."
            if checked
            else ("Learning is off: new objects teach nothing (examples so far stay).")
        )

    def _on_commit_class(self) -> None:
        text = self._commit_class.currentText()
        self._session.teaching.set_commit_class(None if text == MODEL_CHOICE else text)
        chosen = self._session.teaching.commit_class
        self._say(
            f"Your next commits are named '{chosen}'." if chosen else "The model names your next commits."
        )

    @property
    def notice(self) -> str:
        """The last refusal shown in the panel ("" after an action that succeeded)."""
        return self._notice

    def _say(self, text: str) -> None:
        self._notice = ""
        self._info.setStyleSheet("")
        self._status.set_status(text)
        self.refresh()

    def _refuse(self, text: str) -> None:
        self._notice = text
        self._status.set_status(text)
        self._info.setStyleSheet("color: #e0a030;")  # napari's warning orange, readable on dark and light
        self.refresh()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt)
        self.refresh()  # the vocabulary may have changed since
        super().showEvent(event)
