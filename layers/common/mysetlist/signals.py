"""Vote signals: what the VotesApi records with each vote for suspicious-activity detection.

The API stores, on the vote item, the client's network (IPv4 /24, IPv6 /48), keyed hashes of
the address, the user agent and the device id header, the account's creation time and the
show's artist. The raw address, user agent and device id are never stored: detectors only
need to know that two votes came from the same one. The network is stored as text so that a
moderator can read the evidence ("31 accounts from 203.0.113.0/24").

Detectors (``mysetlist.fraud``) read :class:`VoteSignal` values, built from stream images
(the VoteProcessor) or vote items (the sweeper); they report :class:`Incident` values, whose
``vote_ids`` the moderation store quarantines.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mysetlist.timestamps import epoch_of

# Keyed hashing: equal inputs give equal digests inside this system; the digests are not the
# addresses. (Addresses are a small space, so this is pseudonymisation, not anonymisation: the
# network prefix is stored in clear anyway.)
_HASH_KEY = b"mysetlist-vote-signals-v1"
DEVICE_ID_HEADER = "x-device-id"
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
MAX_USER_AGENT = 512

# Moderation states of a vote item (absent: never flagged). Quarantined and rejected votes
# count nowhere (tallies, velocity, trending); released ones count again.
QUARANTINED = "quarantined"
RELEASED = "released"
REJECTED = "rejected"
UNCOUNTED_STATES = frozenset({QUARANTINED, REJECTED})


def keyed_hash(value: str) -> str:
    return hashlib.blake2b(value.encode("utf-8"), key=_HASH_KEY, digest_size=8).hexdigest()


def network_of(address: str) -> str | None:
    """The /24 (IPv4) or /48 (IPv6) network of ``address`` as text; None when it is not an IP."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True, slots=True)
class ClientSignals:
    """What the API knows of the client at vote time (attributes of the vote item)."""

    net: str | None = None
    ip_hash: str | None = None
    ua_hash: str | None = None
    device_hash: str | None = None
    account_created_at: float | None = None  # epoch seconds; None when no profile is known

    @classmethod
    def from_request(
        cls,
        *,
        source_ip: str | None,
        user_agent: str | None,
        device_id: str | None,
        account_created_at: dt.datetime | None,
    ) -> ClientSignals:
        ip = (source_ip or "").strip()
        ua = (user_agent or "").strip()[:MAX_USER_AGENT]
        return cls(
            net=network_of(ip) if ip else None,
            ip_hash=keyed_hash(ip) if ip else None,
            ua_hash=keyed_hash(ua) if ua else None,
            device_hash=keyed_hash(device_id) if device_id else None,
            account_created_at=account_created_at.timestamp() if account_created_at else None,
        )

    def item_attributes(self) -> dict[str, Any]:
        """The vote item's signal attributes (absent ones are left out)."""
        values = {
            "net": self.net,
            "ip_hash": self.ip_hash,
            "ua_hash": self.ua_hash,
            "device_hash": self.device_hash,
            "account_created_at": self.account_created_at,
        }
        return {k: v for k, v in values.items() if v is not None}


# ---- vote ids (opaque, URL-safe: /api/moderation/votes/{vote_id})
def vote_id(show_id: str, user_id: str, song_id: str) -> str:
    raw = "\x1f".join((show_id, user_id, song_id)).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def parse_vote_id(value: str) -> tuple[str, str, str] | None:
    """(show_id, user_id, song_id) of a vote id; None when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    parts = raw.split("\x1f")
    if len(parts) != 3 or not all(parts):
        return None
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True, slots=True)
class VoteSignal:
    """One current vote and its client signals, as detectors see it."""

    vote_id: str
    show_id: str
    song_id: str
    user_id: str
    vote_type: str  # "up" | "down"
    at: float  # epoch seconds of the vote's current state (updated_at)
    artist_id: str | None = None
    net: str | None = None
    ip_hash: str | None = None
    ua_hash: str | None = None
    device_hash: str | None = None
    account_created_at: float | None = None
    moderation: str | None = None  # None, quarantined, released, rejected

    @property
    def account_age_seconds(self) -> float | None:
        if self.account_created_at is None:
            return None
        return max(0.0, self.at - self.account_created_at)

    @property
    def flaggable(self) -> bool:
        """Never flagged before: released votes were cleared by a moderator and stay cleared."""
        return self.moderation is None


def signal_from_item(item: Mapping[str, Any]) -> VoteSignal | None:
    """A signal from a vote item (plain values, as ``mysetlist.dynamo.from_item`` gives them);
    None for an item that is not a vote."""
    try:
        show_id, song_id, user_id = str(item["show_id"]), str(item["song_id"]), str(item["user_id"])
        vote_type = str(item["vote_type"])
        at = epoch_of(str(item.get("updated_at") or item["created_at"]))
    except (KeyError, ValueError):
        return None
    created = item.get("account_created_at")

    def text(name: str) -> str | None:
        value = item.get(name)
        return str(value) if value is not None else None

    return VoteSignal(
        vote_id=vote_id(show_id, user_id, song_id),
        show_id=show_id,
        song_id=song_id,
        user_id=user_id,
        vote_type=vote_type,
        at=at,
        artist_id=text("artist_id"),
        net=text("net"),
        ip_hash=text("ip_hash"),
        ua_hash=text("ua_hash"),
        device_hash=text("device_hash"),
        account_created_at=float(created) if created is not None else None,
        moderation=text("moderation"),
    )


@dataclass(frozen=True, slots=True)
class Incident:
    """One detected incident: raises one alert (``kind`` + ``entity``, de-duplicated while open)
    and quarantines ``vote_ids`` (none for an alert-only finding)."""

    kind: str  # account_burst | network_cluster | device_cluster | velocity_spike | downvote_brigade
    severity: str  # warning | critical (mysetlist.alerts.Severity values)
    entity: str  # e.g. "show:<id>", "net:203.0.113.0/24", "user:<id>", "device:<hash>"
    show_id: str | None
    summary: str  # one plain sentence for the moderator
    evidence: dict[str, Any] = field(default_factory=dict)
    vote_ids: tuple[str, ...] = ()
