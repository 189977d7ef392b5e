"""In-process stand-ins for Lambda containers.

Each function gets one "warm container": a single worker thread with its own asyncio event loop
that runs the handler one invocation at a time, as Lambda runs one invocation per container.
That keeps module-level state (Powertools' metric buffer and logger keys, Mangum's event loop)
as safe as in AWS, while different functions still run side by side.

Events and results go through JSON, as they do in Lambda, so a handler that mutates its event or
returns something Lambda could not serialise fails here too.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]

# How long a caller waits for a container busy with earlier invocations, beyond the function's
# own timeout (Lambda would start another container; here the caller queues).
QUEUE_WAIT_SECONDS = 30.0


class InvocationTimeout(RuntimeError):
    """The function did not answer within its timeout (plus the queueing allowance)."""


class ResponseNotSerializable(RuntimeError):
    """The handler returned something Lambda could not serialise (Runtime.MarshalError)."""


@dataclass
class LambdaContext:
    """The attributes of the Python runtime's context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    invoked_function_arn: str
    aws_request_id: str
    deadline_epoch: float
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline_epoch - time.time()) * 1000))


def _new_event_loop() -> None:
    # Mangum (and any asyncio code) needs a current event loop in the thread that runs it.
    asyncio.set_event_loop(asyncio.new_event_loop())


class FunctionContainer:
    """One warm container of a function: invocations run one at a time on its own thread."""

    def __init__(
        self,
        function_id: str,
        handler: Handler,
        *,
        function_name: str,
        timeout_seconds: int,
        memory_mb: int,
        region: str,
        account_id: str,
    ) -> None:
        self.function_id = function_id
        self.function_name = function_name
        self.timeout_seconds = timeout_seconds
        self.memory_mb = memory_mb
        self.arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self._handler = handler
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"fn-{function_id}", initializer=_new_event_loop
        )

    def new_context(self) -> LambdaContext:
        return LambdaContext(
            function_name=self.function_name,
            memory_limit_in_mb=self.memory_mb,
            invoked_function_arn=self.arn,
            aws_request_id=str(uuid.uuid4()),
            deadline_epoch=time.time() + self.timeout_seconds,
            log_group_name=f"/aws/lambda/{self.function_name}",
            log_stream_name=time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
        )

    def invoke(self, event: dict[str, Any]) -> Any:
        """Run the handler with a JSON copy of ``event``; its JSON-round-tripped result.

        Raises what the handler raises (a function error), :class:`InvocationTimeout`, or
        :class:`ResponseNotSerializable`.
        """
        payload = json.loads(json.dumps(event))
        future = self._executor.submit(self._run, payload)
        try:
            return future.result(timeout=self.timeout_seconds + QUEUE_WAIT_SECONDS)
        except FutureTimeout as exc:
            raise InvocationTimeout(
                f"{self.function_id} did not answer within {self.timeout_seconds}s"
            ) from exc

    def _run(self, payload: dict[str, Any]) -> Any:
        result = self._handler(payload, self.new_context())
        try:
            return json.loads(json.dumps(result))
        except (TypeError, ValueError) as exc:
            raise ResponseNotSerializable(
                f"{self.function_id} returned a value Lambda cannot serialise"
            ) from exc

    def close(self) -> None:
        """Stop accepting invocations; a running one finishes on its own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
