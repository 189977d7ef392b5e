"""One Logger, Tracer and Metrics for the whole package, and the decorator every entry point wears."""

from __future__ import annotations

import contextvars
import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

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

# The Lambda context of the invocation in progress (set by ``entrypoint``): retries and timeouts
# use it to stay inside the function's time limit.
_lambda_context: contextvars.ContextVar[Any] = contextvars.ContextVar("lambda_context", default=None)


def remaining_time_ms() -> int | None:
    """Milliseconds left in the current invocation, or None outside one (tests, scripts)."""
    context = _lambda_context.get()
    if context is None:
        return None
    return int(context.get_remaining_time_in_millis())


def entrypoint(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """Decorate a Lambda handler the same way everywhere: context and correlation id in every
    log line, metrics flushed once per invocation, the invocation traced, and the Lambda context
    available to :func:`remaining_time_ms` while it runs."""

    def wrap(handler: Handler) -> Handler:
        decorated = tracer.capture_lambda_handler(handler, capture_response=False)
        decorated = metrics.log_metrics(decorated)
        decorated = logger.inject_lambda_context(decorated, correlation_id_path=correlation_id_path)

        @functools.wraps(handler)
        def with_context(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            token = _lambda_context.set(context)
            try:
                return decorated(event, context, *args, **kwargs)
            finally:
                _lambda_context.reset(token)

        return cast(Handler, with_context)

    return wrap
