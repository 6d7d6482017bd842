"""The bare RabbitMQ consumer: aio-pika, ``basic.qos(prefetch)``, one ``basic.ack`` per message, no
function, until ``--count`` messages were acked or ``--seconds`` passed. The baseline of scenario 11.

Prints one JSON line: ``{"acked": n, "seconds": s, "rate": msgs/s}``, the rate being messages acked after
the first / time from the first ack to the last; then it stays until SIGTERM/SIGINT, as a server does,
so the scenario reads its CPU time after the queue is drained and stops it like the router. Scenario 11
reads its own figures from the broker, the same way for this consumer and the router; this line says
whether every message was acked.

    python bench/servers/bare_amqp.py --url amqp://guest:guest@127.0.0.1:5672/ --queue Q --count 30000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time

import aio_pika


async def consume(url: str, queue_name: str, count: int, prefetch: int, seconds: float) -> dict[str, float]:
    acked = 0
    first = last = 0.0
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=True)

        async def loop() -> None:
            nonlocal acked, first, last
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    acked += 1
                    last = time.monotonic()
                    if acked == 1:
                        first = last
                    if acked >= count:
                        return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop(), seconds)
    elapsed = last - first
    return {"acked": acked, "seconds": elapsed, "rate": (acked - 1) / elapsed if elapsed > 0 else 0.0}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--count", type=int, required=True, help="stop after this many messages")
    p.add_argument("--prefetch", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0, help="give up after this long")
    args = p.parse_args()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    result = asyncio.run(consume(args.url, args.queue, args.count, args.prefetch, args.seconds))
    print(json.dumps(result), flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    main()
