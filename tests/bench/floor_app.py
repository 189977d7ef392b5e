"""The floor of the cold-start benchmark: the least an HTTP function of this stack can import.

FastAPI with one async route behind Mangum (``lifespan="off"``, as the handlers use it) and a
boto3 DynamoDB client, nothing else. The benchmark ships it as a function's ``app.py`` next to
the same layers and runtime packages as the real functions, and compares their cold starts to it.
"""

from __future__ import annotations

import boto3
from fastapi import FastAPI
from mangum import Mangum

app = FastAPI()
dynamodb = boto3.client("dynamodb")


@app.get("/ping")
async def ping() -> dict[str, str]:
    """The one route."""
    return {"status": "ok"}


handler = Mangum(app, lifespan="off")
