"""One Logger, Tracer and Metrics for the whole package, and the decorator every entry point wears."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths

# Service name and namespace come from POWERTOOLS_SERVICE_NAME (per function) and
# POWERTOOLS_METRICS_NAMESPACE (template Globals).
logger = Logger()
tracer = Tracer()
metrics = Metrics()

# An invocation that records no business metric is normal (a read, say): not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

Handler = TypeVar("Handler", bound=Callable[..., Any])

HTTP_CORRELATION = correlation_paths.API_GATEWAY_HTTP


def entrypoint(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """Decorate a Lambda handler the same way everywhere: context and correlation id in every
    log line, metrics flushed once per invocation, the invocation traced."""

    def wrap(handler: Handler) -> Handler:
        decorated = tracer.capture_lambda_handler(handler, capture_response=False)
        decorated = metrics.log_metrics(decorated)
        return logger.inject_lambda_context(decorated, correlation_id_path=correlation_id_path)  # type: ignore[return-value]

    return wrap
