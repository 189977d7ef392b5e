"""Thresholds of the suspicious-activity detectors (``FRAUD_THRESHOLDS`` overrides them).

Every threshold is a field with its default and the reason for it; ``docs/realtime.md`` lists
them per detector. The defaults were chosen from what organic voting looks like (a fan votes
a few songs per session, seconds to minutes apart; 10-30 % of the accounts voting on a show
are less than a week old; phones of the same model send the same user agent; carriers and
venues put thousands of fans behind one network) and checked, not fitted, against the seeded
simulations of ``make eval-fraud`` over many seeds.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mysetlist.settings import SettingsError

Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]
Share = Annotated[float, Field(gt=0, lt=1)]
Count = Annotated[int, Field(ge=1, le=100_000)]


class FraudConfig(BaseModel):
    """The detectors' thresholds. Frozen: one instance per container, shared by every batch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # ---- shared evidence
    # An account younger than this at the time of its vote is "young" (a sign-up for the
    # occasion). Real fans sign up too, so youth alone never flags a vote.
    young_account_days: Annotated[float, Field(gt=0, le=365)] = 7.0
    # The share of young accounts organic traffic is assumed to have at most (the null
    # hypothesis of the young-share test; high on purpose: a venue promotion brings sign-ups).
    young_share_prior: Share = 0.3
    # The share of accounts sending the single most common user agent, at most (the same
    # phone model and OS version gives the same user agent; the top one has ~15 % of phones).
    ua_share_prior: Share = 0.2
    # The share of accounts organically sharing their device with another account that votes
    # the same song on the same show (families, couples): a few percent at most.
    device_share_prior: Share = 0.03
    # The share of a linked group's accounts that organically cast exactly the same set of two
    # or more votes (same songs, same directions) in the look-back, at most: fans' choices
    # follow popularity, so the top two songs make a common pair, but a few percent at most.
    signature_share_prior: Share = 0.05

    # ---- (a) account bursts: one account voting many songs across shows in a short span
    # The span (seconds) in which the votes are counted: two minutes.
    burst_window_seconds: Seconds = 120.0
    # At least this many votes within the span (a fan votes 1-5 songs a session, seconds apart;
    # the per-user rate limit allows 60 a minute).
    burst_min_votes: Count = 20
    # ... on at least this many shows: a fan voting through one setlist fast is not a burst.
    burst_min_shows: Count = 2
    # Votes of a bursting account this far back (seconds) are flagged with the burst.
    user_window_seconds: Seconds = 900.0

    # ---- (b) coordinated accounts on one network or device
    # Two votes for the same song in the same direction this close (seconds) are "together":
    # a script's accounts take turns within seconds, a person switching accounts on one phone
    # takes 10-30 s.
    sync_seconds: Seconds = 30.0
    # The processor looks this far back (seconds) over a network's or a device's votes.
    cluster_window_seconds: Seconds = 600.0
    # A network incident needs at least this many suspect accounts ...
    cluster_min_accounts: Count = 4
    # ... and this much evidence against organic voting: the sum over the young-share,
    # user-agent, shared-device and same-votes tests of -log10(p) (6: a one-in-a-million
    # coincidence, small enough for the thousands of groups tested a day).
    cluster_min_evidence: Annotated[float, Field(gt=0, le=100)] = 6.0
    # ... and at least this many of its suspects sharing a device with another suspect, or a
    # user agent with herd_min_accounts - 1 others (two friends may have the same phone):
    # accounts voting together from distinct phones are people together (friends who signed
    # up at the show), not one person or one script.
    cluster_min_sharing: Count = 3
    # A device incident: at least this many accounts on one device voting the same song
    # in the same direction within the window (a shared family tablet has two).
    device_min_accounts: Count = 3
    # An account's user agent is a "herd" agent when at least this many accounts of the group
    # send it, and more than ``ua_share_prior`` explains (binomial tail <= 0.05).
    herd_min_accounts: Count = 3
    # An account is in "lockstep" when it voted at least this many songs together with other
    # accounts of the group.
    lockstep_min_songs: Count = 2
    # An account of a suspicious group is flagged when it carries at least this many of the
    # marks young, herd user agent, shared device, lockstep, same votes (exactly the group's
    # most common set of votes, cast by herd_min_accounts accounts or more).
    min_marks: Annotated[int, Field(ge=1, le=5)] = 2

    # ---- (c) velocity far above the show's own baseline
    # The recent rate is the votes per minute over this many minutes (the tallies' window).
    velocity_window_minutes: Annotated[int, Field(ge=1, le=60)] = 5
    # ... compared with the show's rate over this many minutes before it.
    velocity_baseline_minutes: Annotated[int, Field(ge=5, le=24 * 60)] = 60
    # No baseline (no alert) before the show has this many minutes of votes.
    velocity_min_history_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 15
    # A spike: the recent rate at least this many times the baseline rate ...
    velocity_ratio: Annotated[float, Field(gt=1, le=1000)] = 4.0
    # ... and at least this many votes per minute (a quiet show doubling is not news).
    velocity_floor_per_minute: Annotated[float, Field(gt=0, le=1_000_000)] = 20.0
    # A spike's young-account votes are flagged only when young accounts cast at least this
    # share of the spike's votes (an organic surge has the usual 10-30 %).
    spike_young_share: Share = 0.5

    # ---- (d) down-vote brigades on a song
    # Down votes on a song are counted over this span (seconds) ...
    brigade_window_seconds: Seconds = 600.0
    # ... against the song's down share over this span before it.
    brigade_baseline_seconds: Seconds = 3600.0
    # At least this many down votes in the span ...
    brigade_min_downs: Count = 8
    # ... being at least this share of the song's votes in the span (a song being played live
    # collects hundreds of up votes: a brigade on it can be a minority of its votes) ...
    brigade_min_share: Share = 0.1
    # ... and at least this many times the song's usual down share ...
    brigade_min_ratio: Annotated[float, Field(ge=1, le=1000)] = 2.0
    # ... and unlikely (binomial tail) under the song's usual down share, which is estimated
    # from its baseline votes plus this prior (share, weight in votes) so a song with no
    # history gets a sane default.
    brigade_prior_down_share: Share = 0.15
    brigade_prior_weight: Annotated[float, Field(ge=0, le=10_000)] = 20.0
    brigade_max_p_value: Annotated[float, Field(gt=0, lt=1)] = 1e-6
    # Down votes are held only when at least this share of the window's down voters did
    # nothing else on the show in their look-back ("drive-by" accounts): a brigade comes to
    # down-vote, while a disliked song played live draws down votes from the crowd, about half
    # of them from fans who also voted for other songs.
    brigade_min_drive_by_share: Share = 0.7

    # ---- cost: the processor runs per batch
    # A network's or device's window holding at least recheck_min_votes votes (a venue's
    # Wi-Fi holds thousands), and a show's velocity, are analysed again at most this often
    # (seconds) per container; smaller windows with every batch that touches them.
    recheck_seconds: Annotated[float, Field(ge=0, le=600)] = 10.0
    recheck_min_votes: Count = 50

    # ---- the scheduled sweep and de-duplication
    # The sweep looks this far back (seconds) for clusters and bursts (the processor's windows
    # are shorter: it sees every batch).
    sweep_window_seconds: Seconds = 1800.0
    # An incident already reported is reported again (without new votes) at most this often.
    realert_seconds: Seconds = 900.0

    @model_validator(mode="after")
    def _consistent(self) -> FraudConfig:
        if self.burst_window_seconds > self.user_window_seconds:
            raise ValueError("burst_window_seconds must not exceed user_window_seconds")
        if self.velocity_min_history_minutes > self.velocity_baseline_minutes:
            raise ValueError("velocity_min_history_minutes must not exceed velocity_baseline_minutes")
        if self.sync_seconds > self.cluster_window_seconds:
            raise ValueError("sync_seconds must not exceed cluster_window_seconds")
        return self

    @property
    def young_account_seconds(self) -> float:
        return self.young_account_days * 86400.0

    @property
    def show_retention_seconds(self) -> float:
        """How long a show's votes must stay in the window store: the longest look-back of
        the velocity baseline, the brigade baseline and the sweep."""
        velocity = (self.velocity_baseline_minutes + self.velocity_window_minutes + 1) * 60.0
        brigade = self.brigade_baseline_seconds + self.brigade_window_seconds
        return max(velocity, brigade, self.sweep_window_seconds)

    @property
    def key_retention_seconds(self) -> float:
        """How long a network's, device's or user's votes must stay in the window store."""
        return max(self.cluster_window_seconds, self.user_window_seconds, self.sweep_window_seconds)

    @classmethod
    def from_overrides(cls, json_text: str) -> FraudConfig:
        """The defaults with the overrides of ``json_text`` applied (``FRAUD_THRESHOLDS``).

        ``json_text`` is empty or a JSON object of field names to values
        (``{"burst_min_votes": 30, "sync_seconds": 15}``). Raises :class:`SettingsError`
        naming the problem (bad JSON, not an object, an unknown field, a value out of range)
        so a bad deployment fails at cold start instead of detecting the wrong thing.
        """
        if not json_text.strip():
            return cls()
        try:
            overrides: Any = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"FRAUD_THRESHOLDS is not JSON: {exc}") from exc
        if not isinstance(overrides, dict):
            raise SettingsError('FRAUD_THRESHOLDS must be a JSON object like {"burst_min_votes": 30}')
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise SettingsError(
                f"FRAUD_THRESHOLDS: unknown threshold(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(cls.model_fields))})"
            )
        try:
            return cls.model_validate(overrides)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'thresholds'}: {error['msg']}"
                for error in exc.errors()
            )
            raise SettingsError(f"FRAUD_THRESHOLDS: {problems}") from exc
