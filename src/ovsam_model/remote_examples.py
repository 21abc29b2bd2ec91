"""``RemoteExamples``: the examples methods of ``RemotePredictor`` (``OVSAMPredictor``'s, see
``ovsam_model.exemplars``), with the features computed by the server and the example set sent to it by content
(an id; the set itself again when a server lacks it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class RemoteExamples:
    """For a class that has ``server_info``, ``image_id``, ``original_size``, ``prompt_timeout`` and the
    methods stubbed here (``RemotePredictor``)."""

    server_info: dict[str, Any]
    image_id: str | None
    original_size: tuple[int, int] | None
    prompt_timeout: float
    _examples: Any = None  # an ExampleSet, or None: named from the text alone
    _examples_id: str | None = None  # the server's id of it, once sent

    @property
    def _max_bytes(self) -> int:
        raise NotImplementedError  # the predictor's own

    def _on_image(
        self, action: str, body: dict[str, Any], *, vocabulary: bool = True, timeout: float | None = None
    ) -> dict[str, Any]:
        raise NotImplementedError  # the predictor's own

    def _post_json(
        self, path: str, body: dict[str, Any], allow: tuple[int, ...] = (), timeout: float | None = None
    ) -> Any:
        raise NotImplementedError  # the predictor's own

    @property
    def examples(self) -> Any:
        """The examples taught so far (an ``ExampleSet`` of the served model; empty at first)."""
        from .exemplars.store import ExampleSet

        if self._examples is not None:
            return self._examples
        layout = self.server_info.get("examples") or {"layout": "", "width": 0}
        return ExampleSet.empty(self.server_info["fingerprint"], layout["layout"], int(layout["width"]))

    def set_examples(self, examples: Any) -> None:
        """Name from these examples too (None or an empty set: from the text alone); they must be the served
        model's (they are sent to the server with the next request that needs them)."""
        if examples is None or len(examples) == 0:
            self._examples = self._examples_id = None
            return
        mine = self.examples
        examples.check_compatible(mine.model, mine.layout)
        self._examples, self._examples_id = examples, None

    def example_features(self, masks: Any) -> np.ndarray:
        """float32 (N, F) features of bool masks (N, H, W), (H, W) or ``CompactMasks`` on the image set,
        computed by the server (see ``OVSAMPredictor.example_features``)."""
        from .prediction import CompactMasks
        from .serve.wire import array_from_text, masks_to_wire

        if self.image_id is None or self.original_size is None:
            raise ValueError("No image is set: call predictor.set_image(image) first.")
        if not isinstance(masks, CompactMasks):
            dense = np.asarray(masks, bool)
            if dense.ndim == 2:
                dense = dense[None]
            if dense.ndim != 3 or dense.shape[1:] != self.original_size:
                raise ValueError(
                    f"masks must be (N, H, W) or (H, W) bool arrays of the image's {self.original_size} "
                    f"pixels, got shape {dense.shape}."
                )
            masks = dense[:, None]
        data = self._on_image(
            "example-features", {"masks": masks_to_wire(masks)}, vocabulary=False, timeout=self.prompt_timeout
        )
        return array_from_text(data["features"], self._max_bytes)

    def add_examples(self, features: np.ndarray, class_names: Sequence[str]) -> int:
        """Add examples from features computed before (``example_features``); returns how many."""
        names = list(class_names)
        self.set_examples(self.examples.add(features, names))
        return len(names)

    def forget_examples(self, class_names: Any = None) -> int:
        """Drop the examples of ``class_names`` (None: all); returns how many were dropped."""
        before = self.examples
        names = (
            None if class_names is None else [class_names] if isinstance(class_names, str) else class_names
        )
        self.set_examples(before.without(names))
        return len(before) - len(self.examples)

    def save_examples(self, path: Any) -> Any:
        """Write the examples to ``path`` (``ExampleSet.save``)."""
        return self.examples.save(path)

    def load_examples(self, path: Any) -> int:
        """Add the examples of a file written by ``save_examples`` (refused when another model made them)."""
        from .exemplars.store import ExampleSet

        loaded = ExampleSet.load(path)
        self.set_examples(ExampleSet.concat([self.examples, loaded]))
        return len(loaded)

    def _examples_body(self) -> dict[str, Any]:
        from .serve.wire import array_to_text

        examples = self._examples
        return {"features": array_to_text(examples.features), "class_names": list(examples.class_names),
                "model": examples.model, "layout": examples.layout}  # fmt: skip

    def _examples_reference(self) -> str | None:
        """The server's id of the examples (sent now if the server has not seen them), or None."""

        if self._examples is None:
            return None
        if self._examples_id is None:
            self._examples_id = str(self._post_json("/v1/examples", self._examples_body())["id"])
        return self._examples_id
