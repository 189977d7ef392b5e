"""The light (numpy-only) model: the same numbers as the trained one, bytes without pickle, and
serving modules that never import scikit-learn."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mysetlist.predictions.features import all_show_features
from mysetlist.predictions.history import ArtistHistory, load_jsonl
from mysetlist.predictions.light import FORMAT, LightModel, export
from mysetlist.predictions.model import ModelConfig, TrainedModel, train_history
from mysetlist.predictions.predict import predict_show

ROOT = Path(__file__).resolve().parents[2]
# Real setlists shipped with the repository (MIT, see its ATTRIBUTION.md): the Grateful Dead.
SAMPLE = ROOT / "tests" / "local_stack" / "sample_data" / "grateful-dead.jsonl"


def _real_history(shows: int) -> ArtistHistory:
    (history,) = load_jsonl([SAMPLE]).values()
    return history.prefix(shows)


def _assert_same(trained: TrainedModel, light: LightModel, X: np.ndarray) -> None:
    for (wa, pa), (wb, pb) in zip(trained.members(X), light.members(X), strict=True):
        assert wa == wb
        np.testing.assert_allclose(pb, pa, rtol=0, atol=1e-9)
    raw = trained.raw(X)
    np.testing.assert_allclose(light.raw(X), raw, rtol=0, atol=1e-9)
    np.testing.assert_allclose(light.probability(raw), trained.probability(raw), rtol=0, atol=1e-9)
    np.testing.assert_allclose(light.contributions(X), trained.contributions(X), rtol=0, atol=1e-9)


@pytest.mark.parametrize("shows", [400, 120])
def test_light_model_matches_the_trained_one_on_real_data(shows: int) -> None:
    history = _real_history(shows + 1)
    before = history.prefix(shows)
    trained = train_history(before)
    assert trained is not None
    assert trained.hgb is not None
    assert trained.stacker is not None
    assert trained.calibrator is not None
    light = export(trained)
    # Every candidate of the last 30 shows the model was trained on, and of the next show.
    X = np.vstack([f.X for f in all_show_features(history, start=shows - 30)])
    _assert_same(trained, light, X)
    loaded = LightModel.from_bytes(light.to_bytes())
    _assert_same(trained, loaded, X)
    assert loaded.config == trained.config
    assert loaded.trained_on == trained.trained_on
    # Missing values take the trees' learned side (no NaN in features today, but the export
    # must not silently differ if one appears).
    X_nan = X.copy()
    X_nan[::7, :5] = np.nan
    light_hgb = loaded._hgb(X_nan)
    assert light_hgb is not None
    np.testing.assert_allclose(light_hgb, trained.hgb.predict_proba(X_nan)[:, 1], rtol=0, atol=1e-9)
    # The prediction served from the light model is the trained model's prediction.
    show = history.shows[shows]
    assert predict_show(before, show, model=loaded) == predict_show(before, show, model=trained)


def test_light_model_without_the_optional_members() -> None:
    history = _real_history(60)
    config = ModelConfig(hgb_weight=0.0, logistic_weight=0.0, stack=False)
    trained = train_history(history, config)
    assert trained is not None
    assert trained.hgb is None
    assert trained.logistic is None
    assert trained.stacker is None
    light = LightModel.from_bytes(export(trained).to_bytes())
    X = np.vstack([f.X for f in all_show_features(history, start=50)])
    _assert_same(trained, light, X)


def test_bytes_hold_no_pickle_and_reject_other_features() -> None:
    history = _real_history(60)
    trained = train_history(history)
    assert trained is not None
    data = export(trained).to_bytes()
    # Loading with allow_pickle=False raises on any object array.
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    assert all(not a.dtype.hasobject for a in arrays.values())
    header = json.loads(arrays["header"].tobytes())
    assert header["format"] == FORMAT
    # A model trained on another feature list is refused, not misread.
    header["feature_names"] = [*header["feature_names"], "something_new"]
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ValueError, match="other features"):
        LightModel.from_bytes(buffer.getvalue())


def test_serving_modules_do_not_import_sklearn() -> None:
    """Importing the light model and predicting with it, or without a model, loads no sklearn."""
    code = """
import sys, datetime as dt
from mysetlist.predictions.history import ArtistHistory, show_from_record
from mysetlist.predictions.light import LightModel
from mysetlist.predictions.predict import predict_show
from mysetlist.predictions.backtest import score_prediction
shows = [show_from_record({"show_id": f"s{i}", "artist": "A", "date": (dt.date(2020, 1, 1)
         + dt.timedelta(days=i)).isoformat(), "songs": ["a", "b", "c", f"r{i % 3}", "d"]}) for i in range(12)]
history = ArtistHistory.build("A", shows[:11])
light = LightModel.from_bytes(open(sys.argv[1], "rb").read())
assert predict_show(history, shows[11], setlist_length=5, model=light).songs
assert predict_show(history, shows[11], setlist_length=5).songs
print(sorted(m for m in sys.modules if m.split(".")[0] in {"sklearn", "scipy"}))
"""
    history = _real_history(60)
    trained = train_history(history)
    assert trained is not None
    # The subprocess's history has other songs: the model scores whatever rows it is given.
    path = ROOT / ".pytest_cache" / "light-model-test.npz"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(export(trained).to_bytes())
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'layers' / 'common'}", "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
