"""``ExemplarClassifier``: class probabilities of objects from a few examples, and how far each is from them.

Multinomial logistic regression (scikit-learn) on standardised features, the region-embedding block weighted
against the shape block. Chosen over a random forest because (1) its probabilities are smooth and calibrated
enough to be multiplied with the text-based ones (a forest fitted on 1-5 examples per class gives 0/1 votes),
(2) it works from one example per class, (3) it refits in milliseconds for hundreds of examples (lbfgs on a
few dozen features; ``benchmarks/bench_exemplars.py`` times it), so every commit can refit.

Novelty: the distance from an object to its nearest example in the same weighted space, over the typical
distance between an example and its nearest example of the same class (``spacing``); far objects fit no
example (``unknown`` rejection, with the text's opinion, in ``exemplars.fusion``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression

# Inverse regularisation strength of the logistic regression (sklearn's C), on standardised features.
DEFAULT_C = 0.3
_MIN_SCALE = 1e-3


class ExemplarClassifier:
    """Fitted on examples' features (N, F) with class indices (N,) into ``n_classes`` classes.

    weights: (F,) scale of each feature after standardisation: how much each block of features (region
    embedding, shape, text; see ``exemplars.learning``) weighs (a block weighs by its width x weight^2 in
    distances, and a larger weight is a weaker regularisation of its coefficients).
    """

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        *,
        weights: np.ndarray | None = None,
        c: float = DEFAULT_C,
    ) -> None:
        features = np.asarray(features, np.float64)
        labels = np.asarray(labels, np.int64)
        if len(features) == 0:
            raise ValueError("The exemplar classifier needs at least one example.")
        self.n_classes = int(n_classes)
        self.mean = features.mean(axis=0)
        self.scale = np.maximum(features.std(axis=0), _MIN_SCALE)
        self.weights = np.ones(features.shape[1]) if weights is None else np.asarray(weights, np.float64)
        if self.weights.shape != (features.shape[1],):
            raise ValueError(f"weights of shape {self.weights.shape} for {features.shape[1]} features.")
        space = self.transform(features)
        self.examples, self.example_labels = space, labels
        present = np.unique(labels)
        self.model: LogisticRegression | None = None
        self.only_class = int(present[0]) if len(present) == 1 else None
        if self.only_class is None:
            self.model = LogisticRegression(C=c, class_weight="balanced", max_iter=500)
            self.model.fit(space, labels)
        self.spacing = _spacing(space, labels)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """float64 (n, F) standardised, weighted features."""
        return (np.asarray(features, np.float64) - self.mean) / self.scale * self.weights

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """float64 (n, n_classes) probabilities (0 for classes without examples)."""
        space = self.transform(features)
        out = np.zeros((len(space), self.n_classes))
        if self.model is None:
            out[:, self.only_class] = 1.0
            return out
        out[:, self.model.classes_] = _logistic_proba(space, self.model.coef_, self.model.intercept_)
        return out

    def novelty(self, features: np.ndarray) -> np.ndarray:
        """float64 (n,) distance to the nearest example / the examples' typical spacing (about 1 for objects
        like the examples, large for objects unlike any)."""
        space = self.transform(features)
        if len(space) == 0:
            return np.zeros(0)
        nearest = np.sqrt(_squared_distances(space, self.examples).min(axis=1))
        return nearest / self.spacing


def _logistic_proba(space: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``LogisticRegression.predict_proba`` from its coefficients: the same numbers, without scikit-learn's
    per-call input validation, which costs more than the product itself when one object is named per prompt."""
    logits = space @ coef.T + intercept
    if coef.shape[0] == 1:  # two classes: one logistic
        positive = expit(logits[:, 0])
        return np.stack([1.0 - positive, positive], axis=1)
    return softmax(logits, axis=1)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _spacing(space: np.ndarray, labels: np.ndarray) -> float:
    """The median distance from an example to its nearest other example of its class (all classes when no
    class has two); sqrt(F) when there is one example only."""
    if len(space) < 2:
        return float(np.sqrt(space.shape[1]))
    squared = _squared_distances(space, space)
    np.fill_diagonal(squared, np.inf)
    same = labels[:, None] == labels[None, :]
    has_pair = same.sum(axis=1) > 1
    if has_pair.any():
        nearest = np.where(same, squared, np.inf)[has_pair].min(axis=1)
    else:
        nearest = squared.min(axis=1)
    return max(float(np.median(np.sqrt(nearest))), 1e-6)
