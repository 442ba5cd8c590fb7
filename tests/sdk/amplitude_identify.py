"""Identify (a `$identify` event) and group identify with the SDK."""

from amplitude import EventOptions, Identify

from amplitude_common import Harness, args

url, key = args()
h = Harness(url, key, flush_queue_size=10)
ident = Identify().set("email", "ann@example.com").set_once("first_seen", "2026-01-01") \
    .add("logins", 1).append("tags", "beta").unset("legacy")
h.client.identify(ident, EventOptions(user_id="sdk-user-ident", insert_id="sdk-identify-0"))
h.client.group_identify("org", "acme", Identify().set("tier", "enterprise"),
                        EventOptions(user_id="sdk-user-ident", insert_id="sdk-group-0"))
h.wait(2)
h.report()
