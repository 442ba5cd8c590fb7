"""Drive a running Sluice with the official posthog-python SDK.

Usage: posthog_capture.py HOST TOKEN MODE GZIP EXPECT
  MODE    v0 (POST /batch/) or v1 (POST /i/v1/analytics/events)
  GZIP    on | off (v0: Content-Encoding gzip; v1: capture_compression gzip)
  EXPECT  ok            every call must be accepted (the SDK raises otherwise)
          unauthorized  the SDK must see 401 for the first call

Sync mode sends each call in its own request and, with debug=True, raises
on any error status instead of logging it. Prints one JSON object: the SDK
version and, per call, the uuid and what was passed, for the Rust side to
compare with the envelopes it reads back from Kafka.
"""

import json
import sys
import uuid
from datetime import datetime, timezone

import posthog
from posthog import Posthog
from posthog.request import APIError


def main() -> None:
    host, token, mode, gzip, expect = sys.argv[1:6]
    client = Posthog(
        token,
        host=host,
        sync_mode=True,
        debug=True,
        gzip=(gzip == "on"),
        capture_mode=mode,
        capture_compression=("gzip" if gzip == "on" else "none"),
        max_retries=0,
        enable_exception_autocapture=False,
    )
    when = datetime(2026, 1, 15, 10, 0, 0, 123000, tzinfo=timezone.utc)
    sent = []

    def record(call, uid, **facts):
        sent.append({"call": call, "uuid": str(uid), **facts})

    if expect == "unauthorized":
        try:
            client.capture("refused", distinct_id="user-42", uuid=str(uuid.uuid4()))
        except APIError as e:
            print(json.dumps({"status": e.status}))
            return
        raise SystemExit("the SDK accepted a capture with a token Sluice does not know")

    u = uuid.uuid4()
    client.capture(
        "order completed",
        distinct_id="user-42",
        properties={"total": 99.5, "currency": "EUR", "items": ["a", "b"], "$set": {"plan": "pro"}},
        timestamp=when,
        uuid=str(u),
    )
    record("capture", u)

    u = uuid.uuid4()
    client.capture(
        "$identify",
        distinct_id="user-42",
        properties={
            "$set": {"email": "ada@example.com", "name": "Ada"},
            "$set_once": {"first_source": "ads"},
            "$anon_distinct_id": "anon-42",
        },
        timestamp=when,
        uuid=str(u),
    )
    record("identify", u)

    u = uuid.uuid4()
    client.set(distinct_id="user-42", properties={"email": "ada@example.com", "company": "Acme"}, timestamp=when, uuid=str(u))
    record("set", u)

    u = uuid.uuid4()
    client.capture("$pageview", distinct_id="user-42", properties={"$current_url": "https://example.com/ü"}, timestamp=when, uuid=str(u))
    record("pageview", u)

    u = uuid.uuid4()
    client.alias(previous_id="anon-42", distinct_id="user-42", timestamp=when, uuid=str(u))
    record("alias", u)

    u = uuid.uuid4()
    client.group_identify("company", "acme", {"name": "Acme"}, timestamp=when, uuid=str(u), distinct_id="user-42")
    record("group", u)

    client.shutdown()
    print(json.dumps({"version": posthog.VERSION, "timestamp": when.isoformat(), "sent": sent}))


if __name__ == "__main__":
    main()
