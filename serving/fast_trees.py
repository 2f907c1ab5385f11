"""A vectorized evaluator for fitted random forests / extra-trees classifiers (one output).

Why this exists: sklearn's `ForestClassifier.predict` on one row costs ~9 ms for 100 trees, almost all
of it per-tree Python and joblib dispatch (100 `delayed` calls, a lock, per-tree input checks), not
tree traversal. Here all trees are packed into flat node arrays at load and walked level by level
with a handful of numpy operations per level for every (row, tree) pair at once.

It reproduces sklearn exactly (see tests/unit/serving/test_fast_trees.py):
- X is cast to float32 first, as sklearn does, and `x <= threshold` is compared against the float64
  thresholds, as the Cython tree does;
- a tree's probability is `tree_.value[leaf]` (class fractions since sklearn 1.4), and the forest's
  is their running sum in estimator order divided by the number of trees (cumsum keeps that order
  bit for bit, where `sum` would add pairwise); predict = classes_[argmax(proba)].
`build()` returns None for anything else (regressors, multi-output, other estimators, missing tree
attributes), and the caller keeps the model's own predict; rows with NaN (missing values, which
sklearn routes per node) are handed to the model's own method as well. `build()` also checks the
evaluator against sklearn on probe rows before it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_FORESTS = ("RandomForestClassifier", "ExtraTreesClassifier")


class ForestEvaluator:
    """predict / predict_proba of a single-output forest classifier on a float matrix."""

    def __init__(self, forest: Any) -> None:
        trees = [est.tree_ for est in forest.estimators_]
        n_classes = int(forest.n_classes_)
        sizes = [t.node_count for t in trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        total = int(sum(sizes))
        # Node i of the packed forest lives at slot 2*i: children[2*i] is its left child's slot,
        # children[2*i + 1] its right child's (so `slot + went_right` picks one); feature and
        # threshold are stored at the same slots. A leaf points at itself both ways, so walking
        # past it is a no-op and every row can take exactly `depth` steps.
        children = np.empty(2 * total, dtype=np.intp)
        feature = np.zeros(2 * total, dtype=np.intp)
        threshold = np.zeros(2 * total, dtype=np.float64)
        values = np.empty((2 * total, n_classes), dtype=np.float64)
        depth = 0
        for tree, off in zip(trees, offsets, strict=True):
            n = tree.node_count
            slots = 2 * (np.arange(n, dtype=np.intp) + off)
            left, right = tree.children_left.astype(np.intp), tree.children_right.astype(np.intp)
            leaf = left == -1
            children[slots] = np.where(leaf, slots, 2 * (left + off))
            children[slots + 1] = np.where(leaf, slots, 2 * (right + off))
            feature[slots] = np.where(leaf, 0, tree.feature)
            threshold[slots] = np.where(leaf, 0.0, tree.threshold)
            values[slots] = tree.value[:, 0, :n_classes]
            depth = max(depth, int(tree.max_depth))
        self.leaf = np.concatenate([t.children_left == -1 for t in trees])
        self.n_features = int(forest.n_features_in_)
        self.n_trees = len(trees)
        self.classes = forest.classes_
        self.depth = depth
        self.roots = 2 * offsets
        self.children = children
        self.feature = feature
        self.threshold = threshold
        self.values = values

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes): the trees' leaf values averaged, every row walked
        through every tree at once, features cast to float32 as sklearn's trees compare them."""
        with np.errstate(over="ignore"):  # beyond float32's range becomes +-inf, as in sklearn
            x = np.asarray(X, dtype=np.float32).astype(np.float64).ravel()
        n_rows = len(X)
        # One node slot per (row, tree); feature ids are offset by the row's start in the flat x.
        nodes = np.tile(self.roots, n_rows)
        row_start = np.repeat(np.arange(n_rows, dtype=np.intp) * self.n_features, self.n_trees)
        children, feature, threshold = self.children, self.feature, self.threshold
        for _ in range(self.depth):
            # sklearn goes left iff x <= threshold
            went_right = x.take(feature.take(nodes) + row_start) > threshold.take(nodes)
            nodes = children.take(nodes + went_right)
        per_tree = self.values.take(nodes, axis=0).reshape(n_rows, self.n_trees, -1)
        proba = np.cumsum(per_tree, axis=1)[:, -1, :]  # the trees' sum, added in estimator order
        proba /= self.n_trees
        return proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels, shape (rows,): the most probable class of each row."""
        return self.classes.take(np.argmax(self.predict_proba(X), axis=1), axis=0)


def _supported(forest: Any) -> bool:
    if type(forest).__name__ not in _FORESTS or type(forest).__module__.split(".")[0] != "sklearn":
        return False
    if getattr(forest, "n_outputs_", None) != 1 or not hasattr(forest, "estimators_"):
        return False
    classes = getattr(forest, "classes_", None)
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or len(classes) != forest.n_classes_:
        return False
    for est in forest.estimators_:
        tree = getattr(est, "tree_", None)
        if tree is None or getattr(tree, "n_outputs", None) != 1 or tree.value.ndim != 3:
            return False
        if tree.value.shape[2] < forest.n_classes_:
            return False
    return bool(forest.estimators_)


def _probe_rows(ev: ForestEvaluator, seed: int = 0, n: int = 256) -> np.ndarray:
    """Rows made of the trees' own thresholds and their float32 neighbours: every edge case."""
    rng = np.random.default_rng(seed)
    thresholds = ev.threshold[0::2][~ev.leaf]
    thresholds = thresholds[np.abs(thresholds) < 3e38]  # a split on missing values has threshold inf
    if len(thresholds) == 0:
        thresholds = np.zeros(1)
    picks = rng.choice(thresholds, size=(n, ev.n_features)).astype(np.float32)
    nudge = rng.integers(-1, 2, size=picks.shape)
    picks = np.where(nudge < 0, np.nextafter(picks, -np.inf), np.where(nudge > 0, np.nextafter(picks, np.inf), picks))
    return picks.astype(np.float64)


def build(estimator: Any, method: str = "predict") -> tuple[Callable[[np.ndarray], Any], str] | None:
    """(fast predict function, description) for a supported forest or Pipeline ending in one; else None."""
    if method not in ("predict", "predict_proba"):
        return None
    head = None
    forest = estimator
    if type(estimator).__name__ == "Pipeline" and type(estimator).__module__.startswith("sklearn."):
        head, forest = estimator[:-1], estimator.steps[-1][1]
    if not _supported(forest):
        return None
    ev = ForestEvaluator(forest)
    fast = getattr(ev, method)
    slow = getattr(forest, method)
    probe = _probe_rows(ev)
    ours, theirs = fast(probe), slow(probe)
    if method == "predict" and not np.array_equal(ours, theirs):
        return None
    if method == "predict_proba" and not np.allclose(ours, theirs, rtol=0, atol=1e-12):
        return None

    def on_matrix(x: np.ndarray) -> Any:
        if np.isnan(x).any():  # sklearn routes missing values per node; leave that to it
            return slow(x)
        return fast(x)

    if head is not None:

        def run(X: np.ndarray) -> Any:
            xt = head.transform(X)
            if isinstance(xt, np.ndarray) and xt.ndim == 2 and xt.dtype.kind in "fiu":
                return on_matrix(xt)
            return slow(xt)  # sparse, a DataFrame, ...: the forest's own method

    else:
        run = on_matrix
    name = type(forest).__name__
    return run, f"fast-trees ({name}, {ev.n_trees} trees, depth {ev.depth}, {len(ev.leaf)} nodes)"
