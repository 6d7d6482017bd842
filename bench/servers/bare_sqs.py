"""The bare SQS consumer: ``concurrency`` aiobotocore loops of ReceiveMessage(10, long poll, every system
and message attribute: the router's call) then DeleteMessageBatch, until ``--count`` distinct messages
were deleted or ``--seconds`` passed.

No function, no event shaping: the plainest way to drain a queue, the baseline of scenario 9. Prints one
JSON line: ``{"unique": n, "received": n, "seconds": s, "rate": msgs/s, "receives": n, "empty_receives": n,
"deletes": n, "cpu_seconds": s}`` (rate counts distinct message ids deleted, so a redelivery cannot inflate
it; ``cpu_seconds`` is this process's CPU from the first call on, imports and client creation excluded),
also when stopped by SIGTERM, so a caller can read API calls per message and CPU per API call.

    python bench/servers/bare_sqs.py --endpoint URL --queue-url URL --count 2000 --concurrency 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def drain(endpoint: str, queue_url: str, count: int, concurrency: int, seconds: float,
                region: str, wait: int) -> dict[str, float]:
    seen: set[str] = set()
    received = receives = empty = deletes = 0
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    # The router's client settings (router/aws.py): same retries, no client-side parameter validation.
    config = AioConfig(max_pool_connections=concurrency + 5, read_timeout=wait + 40, connect_timeout=10,
                       retries={"max_attempts": 3, "mode": "standard"}, parameter_validation=False)
    async with get_session().create_client("sqs", region_name=region, endpoint_url=endpoint,
                                           config=config) as client:

        async def worker() -> None:
            nonlocal received, receives, empty, deletes
            while not done.is_set():
                resp = await client.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
                    MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])
                receives += 1
                msgs = resp.get("Messages", [])
                if not msgs:
                    empty += 1
                    continue
                received += len(msgs)
                deletes += 1
                out = await client.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)])
                failed = {f["Id"] for f in out.get("Failed", [])}
                seen.update(m["MessageId"] for i, m in enumerate(msgs) if str(i) not in failed)
                if len(seen) >= count:
                    done.set()

        workers: list[asyncio.Task[None]] = []
        cpu0 = time.process_time()
        t0 = time.monotonic()
        t_end = t0

        async def stopper() -> None:
            nonlocal t_end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), seconds)
            t_end = time.monotonic()
            for w in workers:  # abandon the long polls still waiting on an empty queue
                w.cancel()

        # A worker that fails (no credentials, no queue) fails the run and cancels the others.
        async with asyncio.TaskGroup() as tg:
            workers.extend(tg.create_task(worker()) for _ in range(concurrency))
            tg.create_task(stopper())
        elapsed = t_end - t0
        cpu = time.process_time() - cpu0
    return {"unique": len(seen), "received": received, "seconds": elapsed,
            "rate": len(seen) / elapsed if elapsed > 0 else 0.0, "receives": receives,
            "empty_receives": empty, "deletes": deletes, "cpu_seconds": cpu}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--queue-url", required=True)
    p.add_argument("--count", type=int, required=True, help="stop after this many distinct messages")
    p.add_argument("--concurrency", type=int, default=5)
    p.add_argument("--seconds", type=float, default=60.0, help="give up after this long")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--wait", type=int, default=20, help="WaitTimeSeconds of each receive (long poll)")
    args = p.parse_args()
    result = asyncio.run(drain(args.endpoint, args.queue_url, args.count, args.concurrency, args.seconds,
                               args.region, args.wait))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
