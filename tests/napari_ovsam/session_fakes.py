"""A stand-in predictor for session tests without a model, and a session built on it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from napari_ovsam.session import AnnotationSession

CLASSES = ["nucleus", "rod", "ring", "cluster"]


class FakeModel:
    config = "fake-model-v1"

    def state_dict(self):
        return {}


class FakePredictor:
    """Segments "the object under the prompt" of images whose pixel value is 10 x the object's label id.

    The object is the one under the box centre (or the first positive point, given (x, y)); its class is
    ``CLASSES[(id - 1) % 4]`` with probability 0.9, and the background class has probability ``background``.
    Encoder runs are counted in a dict shared by copies.
    """

    def __init__(self, iou_by_value: dict[int, float] | None = None, background: float = 0.0):
        self.model = FakeModel()
        self.vocabulary = None
        self.features = None
        self.counts = {"encode": 0}
        self.iou_by_value = iou_by_value or {}
        self.background = background

    def set_vocabulary(self, vocabulary, text_embeddings=None):
        self.vocabulary = vocabulary

    def set_image(self, image, contrast_limits=None):
        self.counts["encode"] += 1
        self.features = np.asarray(image, np.float32)

    def get_image_embedding(self):
        shape = self.features.shape[:2]
        return {"embedding": self.features.copy(), "original_size": shape, "input_size": shape}

    def set_image_embedding(self, state):
        self.features = np.asarray(state["embedding"], np.float32)

    def predict(self, points=None, point_labels=None, boxes=None, multimask_output=False, top_k=5):
        image = self.features
        centres = []
        n = len(boxes) if boxes is not None else len(points)
        for i in range(n):
            if boxes is not None:
                x0, y0, x1, y1 = boxes[i]
                centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
            else:
                first = int(np.flatnonzero(point_labels[i] == 1)[0])
                centres.append(tuple(points[i][first]))
        values = [int(image[int(round(y)), int(round(x))]) for x, y in centres]
        masks = np.stack([(image == v) & (v > 0) for v in values])[:, None]
        names = [CLASSES[(v // 10 - 1) % 4] for v in values]
        k = min(top_k, 4)
        topk = [[name] + [c for c in CLASSES if c != name][: k - 1] for name in names]
        return SimpleNamespace(
            masks=masks,
            iou=np.array([[self.iou_by_value.get(v, 0.95)] for v in values], np.float32),
            scores=np.full(n, 0.9, np.float32),
            topk_names=topk,
            topk_scores=np.tile(np.array([0.9, 0.05, 0.03, 0.02][:k], np.float32), (n, 1)),
            background=np.full(n, self.background, np.float32),
        )


def disk(shape, centre, radius):
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def make_session(image, predictor=None, **kwargs):
    session = AnnotationSession(predictor or FakePredictor(), **kwargs)
    session.set_vocabulary(CLASSES)
    session.set_image(image)
    session.attach_labels(np.zeros(session.labels_shape, np.uint32))
    return session
