"""Some invalid events in one batch: Sluice refuses the request with the
index maps, the SDK drops exactly those events and resends the rest."""

from amplitude import BaseEvent

from amplitude_common import Harness, args

url, key = args()
h = Harness(url, key, flush_queue_size=10)
events = [
    dict(user_id="sdk-user-valid0"),
    dict(user_id="abc"),  # shorter than 5 characters
    dict(user_id="sdk-user-valid2"),
    dict(user_id="sdk-user-valid3"),
    dict(device_id="00000000-0000-0000-0000-000000000000"),  # documented invalid id
    dict(user_id="sdk-user-valid5"),
]
for i, ids in enumerate(events):
    h.client.track(BaseEvent(event_type="Checked", insert_id=f"sdk-invalid-{i}", **ids))
h.wait(len(events))
h.report()
