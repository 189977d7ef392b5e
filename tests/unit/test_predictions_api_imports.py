"""The prediction HTTP function's cold start imports neither scikit-learn nor SciPy (the model is
served in its light numpy form): checked in a fresh process, as Lambda would import it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.support.template import REPO_ROOT

# What the handler module needs at import; nothing is called over the network then.
ENVIRONMENT = {
    "PREDICTIONS_TABLE": "unit-predictions",
    "CATALOG_TABLE": "unit-catalog",
    "TALLIES_TABLE": "unit-tallies",
    "MODEL_BUCKET": "unit-models",
    "TRAINER_FUNCTION": "unit-model-trainer",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "unit",
    "AWS_SECRET_ACCESS_KEY": "unit",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "MySetlistUnit",
}

PROBE = textwrap.dedent(
    """
    import json, sys
    from tests.support.template import load_handler

    handler = load_handler("PredictionsApi")
    loaded = sorted({name.split(".")[0] for name in sys.modules})
    print(json.dumps({"callable": callable(handler), "modules": loaded}))
    """
)


def probe(code: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env | ENVIRONMENT | {"PYTHONPATH": f"{REPO_ROOT / 'layers' / 'common'}{os.pathsep}{REPO_ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    reply: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return reply


def test_the_http_function_imports_neither_scikit_learn_nor_scipy() -> None:
    reply = probe(PROBE)
    modules = reply["modules"]
    assert isinstance(modules, list)
    assert reply["callable"] is True
    # The probe really loaded the prediction code (numpy and the FastAPI app) ...
    assert {"numpy", "fastapi", "mysetlist"} <= set(modules)
    # ... and neither training library came with it.
    assert "sklearn" not in modules
    assert "scipy" not in modules


def test_the_probe_would_see_scikit_learn_if_it_were_imported() -> None:
    """The check above can fail: the same probe, made to import a training module, sees it."""
    reply = probe(PROBE.replace("loaded = ", "import sklearn.linear_model\nloaded = "))
    modules = reply["modules"]
    assert isinstance(modules, list)
    assert "sklearn" in modules
