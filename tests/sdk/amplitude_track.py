"""Normal tracking with the official SDK: plain events, a revenue event."""

from amplitude import BaseEvent, EventOptions, Revenue

from amplitude_common import Harness, args

url, key = args()
h = Harness(url, key, flush_queue_size=10)
for i in range(5):
    h.client.track(BaseEvent(
        event_type="Song Played",
        user_id="sdk-user-0001",
        device_id="sdk-device-0001",
        insert_id=f"sdk-track-{i}",
        event_properties={"n": i, "title": "Blue"},
        user_properties={"plan": "pro"},
        platform="server",
        country="France",
        session_id=1767225600000,
    ))
h.client.revenue(Revenue(price=3.5, quantity=2, product_id="prod-1", revenue_type="purchase"),
                 EventOptions(user_id="sdk-user-0001", insert_id="sdk-revenue-0"))
h.wait(6)
h.report()
