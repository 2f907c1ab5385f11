"""A vectorized evaluator for fitted HistGradientBoosting classifiers and regressors.

Why this exists: sklearn's `HistGradientBoosting*.predict` on one row costs ~1-4 ms here for 100
iterations: one Python call (and an OpenMP region) per tree, plus input validation and, with native
categoricals, an internal ColumnTransformer. Here every tree is packed into flat node arrays at load
and walked level by level with a handful of numpy operations for every (row, tree) pair at once
(categorical splits are decided once per request, before the walk).

It reproduces sklearn exactly (checked on probe rows by `build()`, see test_fast_hgb.py):
- with `categorical_features`, sklearn first remaps each categorical column through its own fitted
  OrdinalEncoder (categories first, then numbers; an unseen value becomes NaN): the same lookup is
  done here from `_preprocessor`'s fitted categories;
- a node sends NaN to its `missing_go_to_left` side; a categorical node goes left iff the category's
  bit is set in `raw_left_cat_bitsets`, a numeric one iff `x <= num_threshold` (float64, as in
  `_predictor.pyx`);
- the raw score of output k is the baseline plus the trees' leaf values added in iteration order
  (a cumulative sum keeps that order bit for bit);
- predict / predict_proba then go through the estimator's own loss (`_loss.predict_proba`,
  `_loss.link.inverse`) and `classes_`, exactly as sklearn's methods do.
`build()` returns None for anything else (another estimator, a layout of private attributes it does
not recognise, a mismatch on the probes), and the caller keeps the estimator's own method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_HGB = ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor")


class HGBEvaluator:
    """Raw scores, predict and predict_proba of a fitted HistGradientBoosting model on a float matrix.

    Input: an (n_rows, n_features_in_) float64 array in the estimator's input order, NaN for missing.
    """

    def __init__(self, est: Any) -> None:
        predictors = [p for iteration in est._predictors for p in iteration]
        self.k = int(est.n_trees_per_iteration_)
        self.n_iter = len(est._predictors)
        self.n_trees = len(predictors)
        self.n_features = int(est.n_features_in_)
        self.baseline = np.asarray(est._baseline_prediction, dtype=np.float64).reshape(-1)
        self.est = est
        self.is_classifier = hasattr(est, "classes_")
        self._remap = self._categorical_remap(est)
        sizes = [len(p.nodes) for p in predictors]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        total = int(sum(sizes))
        # Node i lives at slot 2*i: children[2*i] is its left child's slot, children[2*i + 1] its
        # right one's; a leaf points at itself both ways, so every (row, tree) takes `depth` steps.
        children = np.empty(2 * total, dtype=np.intp)
        feature = np.zeros(2 * total, dtype=np.intp)
        threshold = np.zeros(2 * total, dtype=np.float64)
        missing_left = np.zeros(2 * total, dtype=bool)
        values = np.zeros(2 * total, dtype=np.float64)
        cat_row = np.zeros(2 * total, dtype=np.intp)  # row in cat_left (0: not categorical)
        is_cat = np.zeros(2 * total, dtype=bool)
        cat_tables = [np.zeros(256, dtype=bool)]
        depth = 0
        for pred, off in zip(predictors, offsets, strict=True):
            nodes = pred.nodes
            n = len(nodes)
            slots = 2 * (np.arange(n, dtype=np.intp) + off)
            leaf = nodes["is_leaf"].astype(bool)
            left = nodes["left"].astype(np.intp)
            right = nodes["right"].astype(np.intp)
            children[slots] = np.where(leaf, slots, 2 * (left + off))
            children[slots + 1] = np.where(leaf, slots, 2 * (right + off))
            feature[slots] = np.where(leaf, 0, nodes["feature_idx"])
            threshold[slots] = np.where(leaf, 0.0, nodes["num_threshold"])
            missing_left[slots] = nodes["missing_go_to_left"].astype(bool)
            values[slots] = nodes["value"]
            cats = np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf)
            for i in cats:
                bits = pred.raw_left_cat_bitsets[nodes["bitset_idx"][i]]
                table = np.array([(int(bits[c // 32]) >> (c % 32)) & 1 for c in range(256)], dtype=bool)
                cat_row[slots[i]] = len(cat_tables)
                is_cat[slots[i]] = True
                cat_tables.append(table)
            depth = max(depth, int(nodes["depth"].max()))
        self.depth = depth
        self.roots = 2 * offsets
        self.children, self.feature, self.threshold = children, feature, threshold
        self.missing_left, self.values = missing_left, values
        self.cat_row, self.is_cat = cat_row, is_cat
        self.is_leaf = np.zeros(2 * total, dtype=bool)
        self.is_leaf[0::2] = children[0::2] == np.arange(0, 2 * total, 2)  # a leaf's left child is itself
        self.cat_left = np.concatenate(cat_tables)
        self.has_categorical = bool(is_cat.any())
        self.n_nodes = total
        # Categorical splits become numeric ones on "virtual features", one per categorical node, that
        # each request fills with 0.0 (goes left) or 1.0 (goes right) before the walk, which then
        # needs only `x <= 0.5` there: a few operations per request instead of a dozen per level.
        self.cat_nodes = np.flatnonzero(is_cat)
        self.cat_feature = feature[self.cat_nodes]
        self.cat_base = cat_row[self.cat_nodes] * 256
        self.cat_missing_left = missing_left[self.cat_nodes]
        self.walk_feature = feature.copy()
        self.walk_feature[self.cat_nodes] = self.n_features + np.arange(len(self.cat_nodes))
        self.walk_threshold = threshold.copy()
        self.walk_threshold[self.cat_nodes] = 0.5
        self.width = self.n_features + len(self.cat_nodes)

    @staticmethod
    def _categorical_remap(est: Any) -> tuple[np.ndarray, list[tuple[int, dict[float, float]]]] | None:
        """(column order after sklearn's internal remap, [(column, {value: code})]) or None without one."""
        pre = getattr(est, "_preprocessor", None)
        if pre is None:
            return None
        mask = np.asarray(est.is_categorical_, dtype=bool)
        encoder = pre.named_transformers_["encoder"]
        order = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)]).astype(np.intp)
        lookups = []
        for col, cats in zip(np.flatnonzero(mask), encoder.categories_, strict=True):
            lookups.append((int(col), {float(v): float(i) for i, v in enumerate(cats) if v == v}))
        return order, lookups

    def remap(self, X: np.ndarray) -> np.ndarray:
        """sklearn's internal categorical encoding: categories first, unseen values -> NaN."""
        if self._remap is None:
            return X
        order, lookups = self._remap
        out = X.take(order, axis=1)
        for pos, (col, codes) in enumerate(lookups):
            get = codes.get
            out[:, pos] = [get(v, np.nan) for v in X[:, col].tolist()]
        return out

    def _categorical_decisions(self, x: np.ndarray) -> np.ndarray:
        """(n_rows, n_categorical_nodes): 0.0 where the row goes left at that node, 1.0 where right.

        As `_predictor.pyx`: NaN (and, defensively, a code outside 0..255) takes the missing side,
        else the category's bit in the node's `raw_left_cat_bitsets` decides.
        """
        codes = x[:, self.cat_feature]
        ok = (codes >= 0) & (codes < 256)  # NaN fails both
        left = self.cat_left.take(self.cat_base + np.where(ok, codes, 0).astype(np.intp))
        left = np.where(ok, left, self.cat_missing_left)
        return (~left).astype(np.float64)

    def raw_predict(self, X: np.ndarray) -> np.ndarray:
        """(n_rows, n_trees_per_iteration) raw scores, as `_raw_predict`."""
        x = self.remap(np.asarray(X, dtype=np.float64))
        n_rows = len(x)
        any_nan = bool(np.isnan(x).any())  # else no node needs its missing-value rule
        if self.has_categorical:
            x = np.hstack([x, self._categorical_decisions(x)])
        flat = x.ravel()
        nodes = np.tile(self.roots, n_rows)
        row_start = np.repeat(np.arange(n_rows, dtype=np.intp) * self.width, self.n_trees) if n_rows > 1 else None
        children, feature, threshold = self.children, self.walk_feature, self.walk_threshold
        missing_left, is_leaf = self.missing_left, self.is_leaf
        for step in range(self.depth):
            at = feature.take(nodes)
            if row_start is not None:
                at += row_start
            v = flat.take(at)
            go_left = v <= threshold.take(nodes)  # NaN compares False: fixed below
            if any_nan:
                go_left = np.where(v != v, missing_left.take(nodes), go_left)
            nodes = children.take(nodes + ~go_left)
            if step % 4 == 3 and is_leaf.take(nodes).all():  # every walk has ended: stop early
                break
        leaves = self.values.take(nodes).reshape(n_rows, self.n_iter, self.k)
        stacked = np.concatenate([np.broadcast_to(self.baseline, (n_rows, 1, self.k)), leaves], axis=1)
        return np.cumsum(stacked, axis=1)[:, -1, :]  # baseline, then each iteration, in order

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Labels (classifier) or values (regressor), shape (rows,), for X of shape (rows, features):
        the raw scores through the loss's inverse link, as HistGradientBoosting*.predict does."""
        raw = self.raw_predict(X)
        if not self.is_classifier:
            return self.est._loss.link.inverse(raw.ravel())
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return self.est.classes_[encoded]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (rows, classes), through the estimator's own loss (sklearn's _loss)."""
        return self.est._loss.predict_proba(self.raw_predict(X))


def _supported(est: Any) -> bool:
    if type(est).__name__ not in _HGB or not type(est).__module__.startswith("sklearn."):
        return False
    needed = ("_predictors", "_baseline_prediction", "_loss", "n_trees_per_iteration_", "n_features_in_")
    if not all(hasattr(est, a) for a in needed) or not est._predictors:
        return False
    pre = getattr(est, "_preprocessor", None)
    if pre is not None and "encoder" not in getattr(pre, "named_transformers_", {}):
        return False
    return all(hasattr(p, "nodes") and hasattr(p, "raw_left_cat_bitsets") for it in est._predictors for p in it)


def probe_rows(ev: HGBEvaluator, seed: int = 0, n: int = 256) -> np.ndarray:
    """Rows built from the trees' thresholds (and their float neighbours), categories seen and unseen, NaN."""
    rng = np.random.default_rng(seed)
    leaf = ev.children[0::2] == np.arange(0, 2 * ev.n_nodes, 2)
    inner = np.flatnonzero(~leaf) * 2
    cols = []
    for f in range(ev.n_features):
        th = ev.threshold[inner[(ev.feature[inner] == f) & ~ev.is_cat[inner]]]
        th = th[np.isfinite(th)]
        base = th if len(th) else np.zeros(1)
        picks = rng.choice(base, size=n)
        nudge = rng.integers(-1, 2, size=n)
        up, down = np.nextafter(picks, np.inf), np.nextafter(picks, -np.inf)
        picks = np.where(nudge < 0, down, np.where(nudge > 0, up, picks))
        cols.append(picks)
    X = np.column_stack(cols)
    if ev._remap is not None:
        _, lookups = ev._remap
        for col, codes in lookups:
            seen = np.array(sorted(codes), dtype=np.float64)
            choices = np.concatenate([seen, [seen.max() + 1 if len(seen) else 0.0, -1.0, -5.0]])
            X[:, col] = rng.choice(choices, size=n)
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def build(estimator: Any, method: str = "predict") -> tuple[Callable[[np.ndarray], Any], str] | None:
    """(fast function on a float64 matrix, description) for a supported HGB model; else None.

    `method` is "predict" or "predict_proba" (classifiers). The evaluator is compared with the
    estimator's own method on `probe_rows` first: predict exactly, probabilities bit for bit.
    """
    if method not in ("predict", "predict_proba") or not _supported(estimator):
        return None
    if method == "predict_proba" and not hasattr(estimator, "classes_"):
        return None
    ev = HGBEvaluator(estimator)
    fast = getattr(ev, method)
    probe = probe_rows(ev)
    if not np.array_equal(fast(probe), getattr(estimator, method)(probe)):
        return None
    name = type(estimator).__name__
    return fast, f"fast-hgb ({name}, {ev.n_trees} trees, depth {ev.depth}, {ev.n_nodes} nodes)"
