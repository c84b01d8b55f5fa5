import asyncio, signal, pytest
from tests.mqtt.conftest import *
from tests.mqtt.test_private_broker import gateway_url, wait_for
pytestmark = pytest.mark.mqtt
async def test_dbg(env, start_broker, make_bridge, make_box):
    devices = await env.provision(2)
    broker = await start_broker(env, persistence=True)
    bridge = await make_bridge(gateway_url(broker))
    boxes = [make_box(broker.url, d, batch_size=5, window=4) for d in devices]
    for box in boxes: box.enqueue(track(200))
    deliveries = [asyncio.create_task(box.deliver(timeout=40.0)) for box in boxes]
    await wait_for(lambda: all(box.acked >= 20 for box in boxes))
    broker.stop(signal.SIGTERM); await asyncio.sleep(0.3); broker.start()
    for i in range(12):
        await asyncio.sleep(1)
        print(i, bridge.metrics.messages, bridge.metrics.accepted, bridge.metrics.publish_failures, len(bridge._handlers), [ (b.acked, b.pending, len(b._inflight), b.connected) for b in boxes])
    await asyncio.gather(*deliveries)
