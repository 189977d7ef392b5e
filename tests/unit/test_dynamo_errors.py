import pytest
from botocore.exceptions import ClientError

from mysetlist.dynamo import unavailable_on_throttle
from mysetlist.errors import Unavailable


def failing(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "x"}}, "PutItem")


@pytest.mark.parametrize("code", ["ThrottlingException", "ProvisionedThroughputExceededException"])
def test_throttling_is_a_503_that_changed_nothing(code: str) -> None:
    with pytest.raises(Unavailable) as caught, unavailable_on_throttle("voting"):
        raise failing(code)
    assert caught.value.details == {"retryable": True, "outcome": "unchanged"}
    assert "nothing was changed" in caught.value.message


@pytest.mark.parametrize("code", ["InternalServerError", "ServiceUnavailable"])
def test_a_server_error_is_a_503_whose_outcome_is_unknown(code: str) -> None:
    with pytest.raises(Unavailable) as caught, unavailable_on_throttle("voting"):
        raise failing(code)
    assert caught.value.details["outcome"] == "unknown"
    assert "read the current state" in caught.value.message


def test_other_errors_pass_through() -> None:
    with pytest.raises(ClientError), unavailable_on_throttle("voting"):
        raise failing("ValidationException")
