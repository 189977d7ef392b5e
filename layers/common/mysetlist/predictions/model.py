"""The learned model: gradient-boosted trees, logistic regression and the original weighted sum,
blended, then calibrated on a time-held-out slice of the training shows.

One :class:`ModelConfig` serves every artist; a model is trained per artist from that artist's
earlier shows only. scikit-learn is imported inside the functions that train, so importing this
module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from mysetlist.predictions.features import FEATURE_NAMES, F, FloatArray, all_show_features, labels
from mysetlist.predictions.history import ArtistHistory


@dataclass(frozen=True)
class EnsembleWeights:
    """The original named weights, each mapped to a feature family (see :func:`weighted_score`)."""

    artist: float = 0.35
    venue: float = 0.15
    genre: float = 0.20
    popularity: float = 0.15
    historical: float = 0.10
    recentTrends: float = 0.05  # the original name, kept for the API

    def __post_init__(self) -> None:
        values = self.as_dict().values()
        if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")

    def as_dict(self) -> dict[str, float]:
        return {
            "artist": self.artist,
            "venue": self.venue,
            "genre": self.genre,
            "popularity": self.popularity,
            "historical": self.historical,
            "recentTrends": self.recentTrends,
        }


@dataclass(frozen=True)
class ModelConfig:
    """One configuration for every artist."""

    weights: EnsembleWeights = field(default_factory=EnsembleWeights)
    # Blend of the members' probabilities.
    hgb_weight: float = 0.6
    logistic_weight: float = 0.25
    weighted_weight: float = 0.15
    # "logit": weighted mean of the members' log-odds (one overconfident member cannot lift a
    # song the others rule out); "probability": weighted mean of the probabilities.
    blend: str = "logit"
    # Learn the blend on the calibration slice (stacking: a logistic regression on the members'
    # log-odds); the fixed weights above are then only the fallback when there is no slice.
    stack: bool = True
    # Training data: the last ``max_train_shows`` shows before the cut, the last
    # ``calibration_frac`` of them held out for calibration.
    max_train_shows: int = 250
    calibration_frac: float = 0.2
    min_songs: int = 5
    retrain_every: int = 10
    hgb_max_iter: int = 60
    hgb_learning_rate: float = 0.15
    hgb_max_leaf_nodes: int = 15
    hgb_min_samples_leaf: int = 40
    hgb_l2: float = 0.0
    # Features the trees may only respond to upwards (monotonic constraints): the artist's own
    # replay rates, for songs at this gap and for songs placed where this one last was. Without
    # the constraint the trees learn accidents of small samples (a song gone for 50 shows
    # scored like a regular because a handful of earlier comebacks shared its other values).
    hgb_increasing: tuple[str, ...] = ("gap_rate", "slot_repeat")
    vote_strength: float = 1.0
    seed: int = 0
    # Features the learned members ignore (kept at zero).
    excluded_features: tuple[str, ...] = ("log_days_since_show",)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the light model's header carries it)."""
        out = asdict(self)
        out["excluded_features"] = list(self.excluded_features)
        out["hgb_increasing"] = list(self.hgb_increasing)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """The config of :meth:`as_dict`. Raises ValueError on an unknown field."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        values = dict(data)
        if "weights" in values:
            values["weights"] = EnsembleWeights(**values["weights"])
        for name in ("excluded_features", "hgb_increasing"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def mask(self, X: FloatArray) -> FloatArray:
        if not self.excluded_features:
            return X
        out = X.copy()
        out[:, [F[name] for name in self.excluded_features]] = 0.0
        return out


def family_scores(X: FloatArray) -> dict[str, FloatArray]:
    """Each named weight's feature family, every value in 0..1."""
    votes = X[:, F["votes"]]
    return {
        "artist": X[:, F["decay_h20"]],  # the artist's current rotation (recency-weighted plays)
        "venue": np.maximum(X[:, F["venue_rate"]], X[:, F["city_rate"]]),  # this venue and city
        "genre": X[:, F["gap_rate"]],  # the artist's style: how it replays songs after this gap
        "popularity": np.where(votes > 0, np.minimum(votes, 1.0), X[:, F["rate_10"]]),  # fan votes
        "historical": X[:, F["rate_all"]],  # the song's share of all the artist's shows
        "recentTrends": X[:, F["rate_5"]],  # the last few shows
    }


def weighted_score(X: FloatArray, weights: EnsembleWeights) -> FloatArray:
    w = weights.as_dict()
    families = family_scores(X)
    total = sum(w.values())
    return np.asarray(sum(w[name] * families[name] for name in w) / total, dtype=np.float64)


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


class Scorer(Protocol):
    """What a prediction needs from a model: :class:`TrainedModel` (scikit-learn, for training
    and the back-test) and ``light.LightModel`` (numpy only, for serving) both provide it."""

    @property
    def config(self) -> ModelConfig: ...

    @property
    def trained_on(self) -> int: ...

    def raw(self, X: FloatArray) -> FloatArray: ...

    def probability(self, raw: FloatArray) -> FloatArray: ...

    def contributions(self, X: FloatArray) -> FloatArray: ...


class BlendedModel:
    """The ensemble's arithmetic, shared by the trained and the light model so both compute the
    same numbers; a subclass supplies the fitted pieces (:meth:`_platt`, :meth:`_hgb`,
    :meth:`_logistic`, :meth:`_stack`, :meth:`_isotonic`)."""

    config: ModelConfig
    trained_on: int
    mean: FloatArray
    scale: FloatArray
    coef: FloatArray  # the logistic member's coefficients on standardised features

    # ---- the fitted pieces (each returns probabilities; None when absent)
    def _platt(self, z: FloatArray) -> FloatArray:
        raise NotImplementedError

    def _hgb(self, X: FloatArray) -> FloatArray | None:
        raise NotImplementedError

    def _logistic(self, Xs: FloatArray) -> FloatArray | None:
        raise NotImplementedError

    def _stack(self, z: FloatArray) -> FloatArray | None:
        raise NotImplementedError

    def _isotonic(self, raw: FloatArray) -> FloatArray | None:
        raise NotImplementedError

    @property
    def has_stacker(self) -> bool:
        raise NotImplementedError

    # ---- the blend
    def members(self, X: FloatArray) -> list[tuple[float, FloatArray]]:
        """Each member's fixed weight and probability: the weighted sum (Platt-scaled), the
        boosted trees, the logistic regression (the last two when trained)."""
        c = self.config
        X = c.mask(X)
        parts = [(c.weighted_weight, self._platt(_logit(weighted_score(X, c.weights))))]
        hgb = self._hgb(X)
        if hgb is not None:
            parts.append((c.hgb_weight, hgb))
        logistic = self._logistic((X - self.mean) / self.scale)
        if logistic is not None:
            parts.append((c.logistic_weight, logistic))
        return parts

    def raw(self, X: FloatArray) -> FloatArray:
        """The blended (uncalibrated) score: ranks the candidates."""
        return self.blend(self.members(X))

    def blend(self, parts: list[tuple[float, FloatArray]]) -> FloatArray:
        """The members' probabilities combined: by the stacker when one was learned, else by
        the fixed weights."""
        stacked = self._stack(np.column_stack([_logit(p) for _, p in parts]))
        if stacked is not None:
            return stacked
        total = sum(w for w, _ in parts) or 1.0
        if self.config.blend == "logit":
            zz = sum(w * _logit(p) for w, p in parts) / total
            return np.asarray(1.0 / (1.0 + np.exp(-zz)), dtype=np.float64)
        return np.asarray(sum(w * p for w, p in parts) / total, dtype=np.float64)

    def probability(self, raw: FloatArray) -> FloatArray:
        """Calibrated probabilities. With a stacker (itself Platt-calibrated on the held-out slice)
        the isotonic map is averaged with it: isotonic steps alone can put a song at 0 or 1 from
        the few examples of its extreme bin."""
        iso = self._isotonic(raw)
        if iso is None:
            return raw
        iso = np.clip(iso, 0.0, 1.0)
        return np.asarray((iso + raw) / 2, dtype=np.float64) if self.has_stacker else iso

    def contributions(self, X: FloatArray) -> FloatArray:
        """Per-feature contributions of the logistic member (standardised value x coefficient).
        The reasons measure the whole ensemble instead (``reasons.family_effects``)."""
        X = self.config.mask(X)
        return np.asarray(((X - self.mean) / self.scale) * self.coef, dtype=np.float64)


@dataclass
class TrainedModel(BlendedModel):
    """A model fitted with scikit-learn (see :func:`train`); ``light.export`` turns it into the
    numpy-only model that serving loads."""

    config: ModelConfig
    hgb: Any
    logistic: Any
    platt: Any
    calibrator: Any
    stacker: Any
    coef: FloatArray
    mean: FloatArray
    scale: FloatArray
    trained_on: int

    def _platt(self, z: FloatArray) -> FloatArray:
        return np.asarray(self.platt.predict_proba(z[:, None])[:, 1], dtype=np.float64)

    def _hgb(self, X: FloatArray) -> FloatArray | None:
        if self.hgb is None:
            return None
        return np.asarray(self.hgb.predict_proba(X)[:, 1], dtype=np.float64)

    def _logistic(self, Xs: FloatArray) -> FloatArray | None:
        if self.logistic is None:
            return None
        return np.asarray(self.logistic.predict_proba(Xs)[:, 1], dtype=np.float64)

    def _stack(self, z: FloatArray) -> FloatArray | None:
        if self.stacker is None:
            return None
        return np.asarray(self.stacker.predict_proba(z)[:, 1], dtype=np.float64)

    @property
    def has_stacker(self) -> bool:
        return self.stacker is not None

    def _isotonic(self, raw: FloatArray) -> FloatArray | None:
        if self.calibrator is None:
            return None
        return np.asarray(self.calibrator.predict(raw), dtype=np.float64)


def _fit_members(
    config: ModelConfig, X: FloatArray, y: FloatArray
) -> tuple[Any, Any, Any, FloatArray, FloatArray]:
    from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]  # noqa: PLC0415

    platt = LogisticRegression(C=1.0, max_iter=200).fit(_logit(weighted_score(X, config.weights))[:, None], y)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    hgb = logistic = None
    if config.hgb_weight > 0:
        hgb = HistGradientBoostingClassifier(
            max_iter=config.hgb_max_iter,
            learning_rate=config.hgb_learning_rate,
            max_leaf_nodes=config.hgb_max_leaf_nodes,
            min_samples_leaf=config.hgb_min_samples_leaf,
            l2_regularization=config.hgb_l2,
            early_stopping=False,
            monotonic_cst=[1 if name in config.hgb_increasing else 0 for name in FEATURE_NAMES]
            if config.hgb_increasing
            else None,
            random_state=config.seed,
        ).fit(X, y)
    if config.logistic_weight > 0:
        logistic = LogisticRegression(C=1.0, max_iter=500).fit((X - mean) / scale, y)
    return hgb, logistic, platt, mean, scale


def train(config: ModelConfig, shows: Sequence[tuple[FloatArray, FloatArray]]) -> TrainedModel | None:
    """A model from (features, labels) of consecutive earlier shows, oldest first.

    The members learn on the older shows; the isotonic calibrator on the newest
    ``calibration_frac`` of them (never on the show being predicted or later ones).
    None when there is nothing to learn from (no positive or no negative label).

    Single-threaded: the trees' OpenMP threads spin while they wait, and on a small or shared
    machine (a Lambda's two vCPUs, a busy laptop) that made one training 20 times slower
    than one thread (137 s against 7 s for the Grateful Dead on a loaded 2-core machine).
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # noqa: PLC0415  (ships with scikit-learn)

    with threadpool_limits(limits=1):
        return _train(config, shows)


def _train(config: ModelConfig, shows: Sequence[tuple[FloatArray, FloatArray]]) -> TrainedModel | None:
    from sklearn.isotonic import IsotonicRegression  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    shows = [s for s in shows if len(s[1])][-config.max_train_shows :]
    if not shows:
        return None
    n_cal = int(len(shows) * config.calibration_frac) if len(shows) >= 10 else 0
    fit_part, cal_part = shows[: len(shows) - n_cal], shows[len(shows) - n_cal :]
    X = config.mask(np.vstack([x for x, _ in fit_part]))
    y = np.concatenate([y for _, y in fit_part])
    if y.min() == y.max():
        return None
    hgb, logistic, platt, mean, scale = _fit_members(config, X, y)
    coef = np.asarray(logistic.coef_[0], dtype=np.float64) if logistic is not None else np.zeros(X.shape[1])
    model = TrainedModel(config, hgb, logistic, platt, None, None, coef, mean, scale, len(shows))
    if cal_part:
        Xc = np.vstack([x for x, _ in cal_part])
        yc = np.concatenate([y for _, y in cal_part])
        if yc.min() != yc.max():
            if config.stack:
                z = np.column_stack([_logit(p) for _, p in model.members(Xc)])
                model.stacker = LogisticRegression(C=1.0, max_iter=200).fit(z, yc)
            model.calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                model.raw(Xc), yc
            )
    return model


def training_rows(
    history: ArtistHistory, config: ModelConfig, upto: int | None = None
) -> list[tuple[FloatArray, FloatArray]]:
    """(features, labels) of the shows before ``upto`` (all shows by default) that a model
    trains on: the last ``max_train_shows`` with at least ``min_songs`` songs."""
    end = len(history.shows) if upto is None else upto
    start = max(0, end - config.max_train_shows)
    features = all_show_features(history, upto=end, start=start)
    return [
        (f.X, labels(history, start + i, f.song_ids))
        for i, f in enumerate(features)
        if len(history.shows[start + i].songs) >= config.min_songs
    ]


def train_history(history: ArtistHistory, config: ModelConfig | None = None) -> TrainedModel | None:
    """A model trained on every show of ``history`` (what the nightly trainer stores): None when
    there is nothing to learn from. Imports scikit-learn."""
    config = config or ModelConfig()
    return train(config, training_rows(history, config))
