"""The detectors' thresholds: defaults, FRAUD_THRESHOLDS overrides and their errors."""

from __future__ import annotations

import json

import pydantic
import pytest

from mysetlist.fraud.config import FraudConfig
from mysetlist.settings import SettingsError


def test_defaults_are_consistent_and_frozen() -> None:
    config = FraudConfig()
    assert config.burst_window_seconds <= config.user_window_seconds
    assert config.young_account_seconds == config.young_account_days * 86400
    with pytest.raises(pydantic.ValidationError):
        config.burst_min_votes = 1


def test_empty_overrides_give_the_defaults() -> None:
    assert FraudConfig.from_overrides("") == FraudConfig()
    assert FraudConfig.from_overrides("  \n") == FraudConfig()


def test_overrides_replace_only_the_fields_they_name() -> None:
    config = FraudConfig.from_overrides(json.dumps({"burst_min_votes": 30, "sync_seconds": 15}))
    assert config.burst_min_votes == 30
    assert config.sync_seconds == 15
    assert config.cluster_min_accounts == FraudConfig().cluster_min_accounts


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"burst_min_vote": 3}', "'burst_min_vote'"),
        ('{"burst_min_votes": 0}', "burst_min_votes"),
        ('{"young_share_prior": 1.5}', "young_share_prior"),
        ('{"burst_window_seconds": 2000}', "user_window_seconds"),
        ('{"velocity_min_history_minutes": 90}', "velocity_baseline_minutes"),
    ],
)
def test_bad_overrides_fail_naming_the_problem(raw: str, needle: str) -> None:
    with pytest.raises(SettingsError, match="FRAUD_THRESHOLDS") as caught:
        FraudConfig.from_overrides(raw)
    assert needle in str(caught.value)


def test_retention_covers_the_longest_look_back() -> None:
    config = FraudConfig.from_overrides(json.dumps({"sweep_window_seconds": 7200}))
    assert config.show_retention_seconds >= 7200
    assert config.key_retention_seconds >= 7200
    default = FraudConfig()
    assert default.show_retention_seconds >= default.brigade_baseline_seconds + default.brigade_window_seconds
    assert (
        default.show_retention_seconds
        >= (default.velocity_baseline_minutes + default.velocity_window_minutes) * 60
    )
    assert default.key_retention_seconds >= default.cluster_window_seconds
