"""The bare Kinesis reader: one aiobotocore loop per shard, GetShardIterator(TRIM_HORIZON) then GetRecords
until ``--count`` records were read in all or ``--seconds`` passed. No function, no checkpoint.

Each loop keeps Kinesis' quota of 5 GetRecords calls per second per shard (``--interval`` 0.2 s between
the calls of one shard), as any reader of a real stream must, and asks ``--limit`` records a call. The
baseline of scenario 10. Prints one JSON line: ``{"records": n, "seconds": s, "rate": records/s}``,
the rate being records read after the last shard's first page / time from that page to the last page
(start-up left out; the router side is measured alike from its metrics). Pages that shards which started
earlier read before that moment are left out too: counting them over a window that excludes the time
they took would overstate the loop's rate.

    python bench/servers/bare_kinesis.py --endpoint URL --stream-arn ARN --count 40000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session


async def read(endpoint: str, stream_arn: str, count: int, seconds: float, region: str, limit: int,
               interval: float) -> dict[str, float]:
    got = 0
    first = 0.0  # when the last shard got its first page
    last = 0.0
    pages: list[tuple[float, int]] = []  # (when, records) of every page but each shard's first
    done = asyncio.Event()
    config = AioConfig(max_pool_connections=64, retries={"max_attempts": 3, "mode": "standard"})
    async with get_session().create_client("kinesis", region_name=region, endpoint_url=endpoint,
                                           config=config) as client:
        shards: list[dict[str, Any]] = (await client.list_shards(StreamARN=stream_arn))["Shards"]

        async def shard_loop(shard_id: str) -> None:
            nonlocal got, first, last
            started = False
            it = (await client.get_shard_iterator(StreamARN=stream_arn, ShardId=shard_id,
                                                  ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
            while not done.is_set() and it:
                next_call = time.monotonic() + interval
                page = await client.get_records(ShardIterator=it, Limit=limit, StreamARN=stream_arn)
                if page["Records"]:
                    now = time.monotonic()
                    if not started:
                        started = True
                        first = max(first, now)
                    else:
                        pages.append((now, len(page["Records"])))
                    last = now
                    got += len(page["Records"])
                    if got >= count:
                        done.set()
                it = page.get("NextShardIterator")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), max(0.0, next_call - time.monotonic()))

        async def deadline() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), seconds)
            done.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(deadline())
            for shard in shards:
                tg.create_task(shard_loop(shard["ShardId"]))
    elapsed = last - first if first else 0.0
    after = sum(n for when, n in pages if when > first)
    rate = after / elapsed if elapsed > 0 else 0.0
    return {"records": got, "seconds": elapsed, "rate": rate}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--stream-arn", required=True)
    p.add_argument("--count", type=int, required=True, help="stop after this many records")
    p.add_argument("--seconds", type=float, default=60.0, help="give up after this long")
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--limit", type=int, default=500, help="GetRecords Limit")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between calls of one shard")
    args = p.parse_args()
    result = asyncio.run(read(args.endpoint, args.stream_arn, args.count, args.seconds, args.region,
                              args.limit, args.interval))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
