"""A batch over /2/httpapi's 1 MB limit: Sluice answers 413, the SDK halves
its batch size and resends until everything is accepted."""

from amplitude import BaseEvent

from amplitude_common import Harness, args

url, key = args()
h = Harness(url, key, flush_queue_size=20)
# ~70 KB per event (string values stay under the 1024-character limit):
# 20 events are ~1.4 MB, 10 are ~0.7 MB.
filler = "x" * 1000
for i in range(20):
    h.client.track(BaseEvent(
        event_type="Large Event",
        device_id="sdk-device-split",
        insert_id=f"sdk-split-{i:02}",
        event_properties={f"p{k:02}": filler for k in range(70)},
    ))
h.wait(20)
h.report()
