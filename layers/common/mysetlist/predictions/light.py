"""The trained model in a light form for serving: numpy arrays only, no scikit-learn.

:func:`export` reads the fitted attributes of a :class:`~mysetlist.predictions.model.TrainedModel`
(the boosted trees' node arrays, the logistic regressions' coefficients, the isotonic
calibrator's thresholds) into a :class:`LightModel`, which computes the same numbers with numpy
(the unit tests hold it to 1e-9). :meth:`LightModel.to_bytes` writes one ``.npz`` (a JSON header
plus plain arrays) and :meth:`LightModel.from_bytes` reads it with ``allow_pickle=False``: a
model file can never run code. Nothing here imports scikit-learn.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mysetlist.predictions.features import FEATURE_NAMES, FloatArray
from mysetlist.predictions.model import BlendedModel, ModelConfig, TrainedModel

FORMAT = 1

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _sigmoid(z: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):  # exp(-z) = inf for a very negative z: the result is 0.0
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


@dataclass(frozen=True)
class Trees:
    """Every tree of a boosted ensemble in one set of node arrays. A leaf points to itself, so
    walking ``depth`` steps from the roots lands every row on its leaf in each tree."""

    feature: IntArray
    threshold: FloatArray
    missing_left: BoolArray
    left: IntArray
    right: IntArray
    value: FloatArray
    roots: IntArray
    baseline: float
    depth: int

    def raw(self, X: FloatArray) -> FloatArray:
        """The ensemble's log-odds: the baseline plus each tree's leaf value."""
        rows = np.arange(len(X))[:, None]
        node = np.broadcast_to(self.roots, (len(X), len(self.roots))).copy()
        for _ in range(self.depth):
            x = X[rows, self.feature[node]]
            go_left = np.where(np.isnan(x), self.missing_left[node], x <= self.threshold[node])
            node = np.where(go_left, self.left[node], self.right[node])
        return np.asarray(self.baseline + self.value[node].sum(axis=1), dtype=np.float64)


@dataclass(frozen=True)
class Linear:
    """A binary logistic regression: sigmoid(X @ coef + intercept)."""

    coef: FloatArray
    intercept: float

    def proba(self, X: FloatArray) -> FloatArray:
        return _sigmoid(X @ self.coef + self.intercept)


@dataclass(frozen=True)
class Isotonic:
    """Linear interpolation between the fitted thresholds, clipped at both ends."""

    x: FloatArray
    y: FloatArray

    def predict(self, raw: FloatArray) -> FloatArray:
        return np.asarray(np.interp(raw, self.x, self.y), dtype=np.float64)


@dataclass
class LightModel(BlendedModel):
    """The numpy-only twin of a :class:`TrainedModel` (same ``raw``, ``probability`` and
    ``contributions``)."""

    config: ModelConfig
    trained_on: int
    platt: Linear
    trees: Trees | None
    logistic: Linear | None
    stacker: Linear | None
    calibrator: Isotonic | None
    coef: FloatArray
    mean: FloatArray
    scale: FloatArray

    def _platt(self, z: FloatArray) -> FloatArray:
        return self.platt.proba(z[:, None])

    def _hgb(self, X: FloatArray) -> FloatArray | None:
        return None if self.trees is None else _sigmoid(self.trees.raw(X))

    def _logistic(self, Xs: FloatArray) -> FloatArray | None:
        return None if self.logistic is None else self.logistic.proba(Xs)

    def _stack(self, z: FloatArray) -> FloatArray | None:
        return None if self.stacker is None else self.stacker.proba(z)

    @property
    def has_stacker(self) -> bool:
        return self.stacker is not None

    def _isotonic(self, raw: FloatArray) -> FloatArray | None:
        return None if self.calibrator is None else self.calibrator.predict(raw)

    # ---- bytes
    def to_bytes(self) -> bytes:
        """One ``.npz``: a JSON header (format, config, feature names, which parts exist) and
        the arrays. No pickled object anywhere."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "platt": _pack(self.platt),
            "coef": self.coef,
            "mean": self.mean,
            "scale": self.scale,
        }
        if self.logistic is not None:
            arrays["logistic"] = _pack(self.logistic)
        if self.stacker is not None:
            arrays["stacker"] = _pack(self.stacker)
        if self.calibrator is not None:
            arrays["iso_x"] = self.calibrator.x
            arrays["iso_y"] = self.calibrator.y
        if self.trees is not None:
            t = self.trees
            arrays |= {
                "tree_feature": t.feature.astype(np.int32),
                "tree_threshold": t.threshold,
                "tree_missing_left": t.missing_left,
                "tree_left": t.left.astype(np.int32),
                "tree_right": t.right.astype(np.int32),
                "tree_value": t.value,
                "tree_roots": t.roots.astype(np.int32),
                "tree_baseline": np.array([t.baseline]),
            }
        header = {
            "format": FORMAT,
            "config": self.config.as_dict(),
            "trained_on": self.trained_on,
            "feature_names": list(FEATURE_NAMES),
            "tree_depth": self.trees.depth if self.trees is not None else 0,
        }
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        named: dict[str, Any] = arrays  # savez's keyword names are the array names
        np.savez_compressed(buffer, allow_pickle=False, **named)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> LightModel:
        """The model of :meth:`to_bytes`. Raises ValueError when the file is of another format
        or was trained on other features than this code computes."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
        if header.get("format") != FORMAT:
            raise ValueError(f"unsupported light model format {header.get('format')!r}")
        if tuple(header["feature_names"]) != FEATURE_NAMES:
            raise ValueError("the model was trained on other features than this code computes")
        trees = None
        if "tree_feature" in arrays:
            trees = Trees(
                feature=arrays["tree_feature"].astype(np.int64),
                threshold=arrays["tree_threshold"].astype(np.float64),
                missing_left=arrays["tree_missing_left"].astype(np.bool_),
                left=arrays["tree_left"].astype(np.int64),
                right=arrays["tree_right"].astype(np.int64),
                value=arrays["tree_value"].astype(np.float64),
                roots=arrays["tree_roots"].astype(np.int64),
                baseline=float(arrays["tree_baseline"][0]),
                depth=int(header["tree_depth"]),
            )
        return cls(
            config=ModelConfig.from_dict(header["config"]),
            trained_on=int(header["trained_on"]),
            platt=_unpack(arrays["platt"]),
            trees=trees,
            logistic=_unpack(arrays["logistic"]) if "logistic" in arrays else None,
            stacker=_unpack(arrays["stacker"]) if "stacker" in arrays else None,
            calibrator=Isotonic(arrays["iso_x"], arrays["iso_y"]) if "iso_x" in arrays else None,
            coef=arrays["coef"].astype(np.float64),
            mean=arrays["mean"].astype(np.float64),
            scale=arrays["scale"].astype(np.float64),
        )


def _pack(linear: Linear) -> FloatArray:
    return np.concatenate([linear.coef, [linear.intercept]])


def _unpack(packed: FloatArray) -> Linear:
    return Linear(np.asarray(packed[:-1], dtype=np.float64), float(packed[-1]))


def _linear(estimator: Any) -> Linear:
    """A fitted binary LogisticRegression's coefficients."""
    return Linear(
        np.asarray(estimator.coef_[0], dtype=np.float64).copy(), float(np.asarray(estimator.intercept_)[0])
    )


def _trees(hgb: Any) -> Trees:
    """A fitted binary HistGradientBoostingClassifier's trees (numerical splits only)."""
    baseline = np.asarray(hgb._baseline_prediction, dtype=np.float64).ravel()
    if len(baseline) != 1:
        raise ValueError("only a binary classifier can be exported")
    features: list[IntArray] = []
    thresholds: list[FloatArray] = []
    missing: list[BoolArray] = []
    lefts: list[IntArray] = []
    rights: list[IntArray] = []
    values: list[FloatArray] = []
    roots: list[int] = []
    offset = 0
    depth = 0
    for iteration in hgb._predictors:
        (predictor,) = iteration
        nodes = predictor.nodes
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported")
        leaf = nodes["is_leaf"].astype(bool)
        here = np.arange(len(nodes), dtype=np.int64) + offset
        features.append(np.where(leaf, 0, nodes["feature_idx"]).astype(np.int64))
        thresholds.append(np.where(leaf, np.inf, nodes["num_threshold"]).astype(np.float64))
        missing.append(nodes["missing_go_to_left"].astype(bool))
        lefts.append(np.where(leaf, here, nodes["left"].astype(np.int64) + offset))
        rights.append(np.where(leaf, here, nodes["right"].astype(np.int64) + offset))
        values.append(np.where(leaf, nodes["value"], 0.0).astype(np.float64))
        roots.append(offset)
        depth = max(depth, int(nodes["depth"].max()))
        offset += len(nodes)
    return Trees(
        feature=np.concatenate(features),
        threshold=np.concatenate(thresholds),
        missing_left=np.concatenate(missing),
        left=np.concatenate(lefts),
        right=np.concatenate(rights),
        value=np.concatenate(values),
        roots=np.array(roots, dtype=np.int64),
        baseline=float(baseline[0]),
        depth=depth,
    )


def export(trained: TrainedModel) -> LightModel:
    """The light twin of a fitted model. Reads fitted attributes only (no scikit-learn import)."""
    calibrator = None
    if trained.calibrator is not None:
        calibrator = Isotonic(
            np.asarray(trained.calibrator.X_thresholds_, dtype=np.float64).copy(),
            np.asarray(trained.calibrator.y_thresholds_, dtype=np.float64).copy(),
        )
    return LightModel(
        config=trained.config,
        trained_on=trained.trained_on,
        platt=_linear(trained.platt),
        trees=_trees(trained.hgb) if trained.hgb is not None else None,
        logistic=_linear(trained.logistic) if trained.logistic is not None else None,
        stacker=_linear(trained.stacker) if trained.stacker is not None else None,
        calibrator=calibrator,
        coef=trained.coef.copy(),
        mean=trained.mean.copy(),
        scale=trained.scale.copy(),
    )
