"""Recursive loop detection end to end: a real router, moto's SQS server and RabbitMQ.

A loop is a function whose output comes back to it: a handler that sends to the queue its route reads
(boto3 inside the handler), an async function whose ``on_success`` destination is itself, an amqp
destination that feeds the queue the function's amqp route reads. Lambda stops the 17th invocation of a
chain (``recursive_loop: Terminate``, the default), counts it and logs it; ``Allow`` runs on; a chain
shorter than the limit is untouched. The chain's count rides in the X-Ray trace header's ``Lineage``
(``_X_AMZN_TRACE_ID`` in the function; ``AWSTraceHeader`` on SQS; ``x-amzn-trace-id`` on AMQP).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from router import lineage
from tests.router_process import RouterFactory, RouterProcess, http
from tests.waiting import until_sync

REGION = "us-east-1"
LIMIT = lineage.LIMIT


def metric(rp: RouterProcess, name: str, **labels: str) -> float:
    """The value of one sample on ``/metrics`` (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = http("GET", rp.url + "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def seen(path: Path) -> list[dict[str, Any]]:
    """The invocations a handler recorded, one JSON line each."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loop_logs(rp: RouterProcess) -> list[dict[str, Any]]:
    return [r for r in rp.log_records() if "recursive loop detected" in r.get("message", "")]


# A handler that sends each message's number + 1 back to the queue it reads, with boto3, until ``STOP``.
# botocore copies _X_AMZN_TRACE_ID into X-Amzn-Trace-Id (AWS_LAMBDA_FUNCTION_NAME is set), and real SQS
# keeps that header as the message's AWSTraceHeader; moto's SQS does not (it keeps only the
# MessageSystemAttributes parameter), so the handler passes the header there too, and records the header
# botocore put on the request to show the SDK carries the count by itself.
SQS_HANDLER = """
    import json, os
    from urllib.parse import unquote
    import boto3

    sqs = boto3.client("sqs", region_name="{region}", endpoint_url="{endpoint}")
    sent_headers = []
    sqs.meta.events.register("before-send.sqs.SendMessage",
                             lambda request, **kw: sent_headers.append(request.headers["X-Amzn-Trace-Id"]))

    def handler(event, context):
        for record in event["Records"]:
            n = int(record["body"])
            trace = os.environ["_X_AMZN_TRACE_ID"]
            with open("{seen}", "a") as f:
                f.write(json.dumps({{"n": n, "trace": trace,
                                     "received": record["attributes"].get("AWSTraceHeader")}}) + "\\n")
            if {stop} and n >= {stop}:
                continue
            sqs.send_message(QueueUrl="{queue}", MessageBody=str(n + 1), MessageSystemAttributes={{
                "AWSTraceHeader": {{"DataType": "String", "StringValue": trace}}}})
            sent = unquote(sent_headers.pop().decode())
            with open("{seen}.sdk", "a") as f:
                f.write(json.dumps({{"n": n, "trace": trace, "sdk": sent}}) + "\\n")
"""


def _sqs_loop(router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any, *,
              recursive_loop: str, stop: int) -> tuple[RouterProcess, Path]:
    queue_url = sqs_client.create_queue(QueueName=f"loop-{uuid.uuid4().hex[:8]}",
                                        Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    record = tmp_path / "seen.jsonl"
    router_factory.write_function("loop", SQS_HANDLER.format(
        region=REGION, endpoint=moto_server, seen=record, stop=stop, queue=queue_url))
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}, endpoint_url: "{moto_server}"}}
        functions:
          loop:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'loop'}
            timeout: 20s
            recursive_loop: {recursive_loop}
        routes:
          - name: loop-queue
            source: {{type: sqs, queue_url: "{queue_url}", batch_size: 1}}
            function: loop
    """)
    sqs_client.send_message(QueueUrl=queue_url, MessageBody="1")
    return rp, record


@pytest.mark.timeout(120)
def test_a_handler_sending_to_its_own_queue_stops_after_16(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    rp, record = _sqs_loop(router_factory, tmp_path, moto_server, sqs_client, recursive_loop="Terminate",
                           stop=0)
    until_sync(lambda: metric(rp, "router_recursive_loops_total", function="loop") >= 1,
               "the 17th invocation refused", deadline=60)
    runs = seen(record)
    assert [r["n"] for r in runs] == list(range(1, LIMIT + 1))  # 16 ran, the 17th did not
    key = lineage.function_key(f"arn:aws:lambda:{REGION}:000000000000:function:loop")
    assert [lineage.hops(r["trace"], key) for r in runs] == list(range(1, LIMIT + 1))
    assert len({lineage.root(r["trace"]) for r in runs}) == 1  # one chain
    assert runs[0]["received"] is None
    assert all(lineage.hops(r["received"], key) == r["n"] - 1 for r in runs[1:])
    # The SDK itself put the function's trace header (with the count) on its SendMessage.
    sdk = seen(Path(f"{record}.sdk"))
    assert sdk
    assert all(r["sdk"] == r["trace"] for r in sdk)
    logs = loop_logs(rp)
    assert len(logs) == 1, logs
    assert logs[0]["function"] == "loop"
    assert logs[0]["route"] == "loop-queue"
    assert f"this chain has invoked the function {LIMIT} times" in logs[0]["message"]
    assert metric(rp, "router_invocations_total", function="loop", source="sqs", outcome="success") == LIMIT


@pytest.mark.timeout(120)
def test_allow_keeps_going(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    stop = LIMIT + 4  # the handler ends the loop itself
    rp, record = _sqs_loop(router_factory, tmp_path, moto_server, sqs_client, recursive_loop="Allow",
                           stop=stop)
    until_sync(lambda: len(seen(record)) >= stop, f"{stop} invocations", deadline=60)
    until_sync(lambda: metric(rp, "router_invocations_total", function="loop", source="sqs",
                              outcome="success") == stop, "the last invocation counted")
    assert [r["n"] for r in seen(record)] == list(range(1, stop + 1))
    assert metric(rp, "router_recursive_loops_total", function="loop") == 0
    assert loop_logs(rp) == []


@pytest.mark.timeout(120)
def test_a_chain_shorter_than_the_limit_is_untouched(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    stop = LIMIT - 6
    rp, record = _sqs_loop(router_factory, tmp_path, moto_server, sqs_client, recursive_loop="Terminate",
                           stop=stop)
    until_sync(lambda: metric(rp, "router_invocations_total", function="loop", source="sqs",
                              outcome="success") == stop, f"{stop} invocations", deadline=60)
    assert [r["n"] for r in seen(record)] == list(range(1, stop + 1))
    assert metric(rp, "router_recursive_loops_total", function="loop") == 0
    assert loop_logs(rp) == []


# --- a function whose on_success destination is itself ------------------------------------------------

FUNCTION_HANDLER = """
    import json, os

    def handler(event, context):
        trace = os.environ["_X_AMZN_TRACE_ID"]
        with open("{seen}", "a") as f:
            f.write(json.dumps({{"trace": trace, "record": "requestContext" in event}}) + "\\n")
        hops = max(int(e.split(":")[1]) for e in trace.split("Lineage=")[1].split("|"))
        if {stop} and hops >= {stop}:
            raise RuntimeError("the handler ends the loop")  # no on_success: the chain ends here
        return {{"hops": hops}}
"""


def _function_loop(router_factory: RouterFactory, tmp_path: Path, *, recursive_loop: str,
                   stop: int) -> tuple[RouterProcess, Path]:
    record = tmp_path / "seen.jsonl"
    router_factory.write_function("loop", FUNCTION_HANDLER.format(seen=record, stop=stop))
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}}}
        functions:
          loop:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'loop'}
            recursive_loop: {recursive_loop}
            async:
              retries: 0
              on_success: {{type: function, function: loop}}
              on_failure: {{type: file, path: {tmp_path / 'failed.jsonl'}}}
    """)
    status, _, body = http("POST", f"{rp.url}/2015-03-31/functions/loop/invocations", b'{"n": 1}',
                           {"X-Amz-Invocation-Type": "Event"})
    assert status == 202, body
    return rp, record


@pytest.mark.timeout(120)
def test_a_function_destination_to_itself_stops_after_16_and_goes_to_on_failure(
    router_factory: RouterFactory, tmp_path: Path,
) -> None:
    rp, record = _function_loop(router_factory, tmp_path, recursive_loop="Terminate", stop=0)
    failed = tmp_path / "failed.jsonl"
    until_sync(failed.exists, "the refused event's on_failure record", deadline=60)
    runs = seen(record)
    key = lineage.function_key(f"arn:aws:lambda:{REGION}:000000000000:function:loop")
    assert [lineage.hops(r["trace"], key) for r in runs] == list(range(1, LIMIT + 1))
    assert [r["record"] for r in runs] == [False] + [True] * (LIMIT - 1)  # then each the last's record
    assert len({lineage.root(r["trace"]) for r in runs}) == 1
    # Lambda sends the event it stopped to the on-failure destination: here the 16th's success record.
    (refused,) = seen(failed)
    assert refused["requestContext"]["condition"] == "RetriesExhausted"
    assert refused["responsePayload"]["errorType"] == "RecursiveInvocationException"
    assert refused["requestPayload"]["responsePayload"] == {"hops": LIMIT}
    assert metric(rp, "router_recursive_loops_total", function="loop") == 1
    logs = loop_logs(rp)
    assert len(logs) == 1, logs
    assert logs[0]["function"] == "loop"
    assert "source function" in logs[0]["message"]


@pytest.mark.timeout(120)
def test_allow_lets_a_function_destination_loop_run_on(router_factory: RouterFactory, tmp_path: Path) -> None:
    stop = LIMIT + 4  # the handler fails at this hop, which ends the chain (no on_success)
    rp, record = _function_loop(router_factory, tmp_path, recursive_loop="Allow", stop=stop)
    failed = tmp_path / "failed.jsonl"
    until_sync(failed.exists, "the handler's own failure", deadline=60)
    assert len(seen(record)) == stop
    (last,) = seen(failed)
    assert last["responsePayload"]["errorMessage"] == "the handler ends the loop"
    assert metric(rp, "router_recursive_loops_total", function="loop") == 0


# --- an amqp route whose function publishes back to the queue it reads --------------------------------

# No AMQP client passes the trace header on by itself (the AWS SDKs do, for AWS services): the handler
# copies _X_AMZN_TRACE_ID into the x-amzn-trace-id header, as the router's amqp destination does.
AMQP_HANDLER = """
    import asyncio, json, os
    import aio_pika

    async def publish(body, trace):
        conn = await aio_pika.connect("{url}", timeout=10)
        try:
            channel = await conn.channel(publisher_confirms=True)
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers={{"x-amzn-trace-id": trace}}), routing_key="{queue}")
        finally:
            await conn.close()

    def handler(event, context):
        trace = os.environ["_X_AMZN_TRACE_ID"]
        with open("{seen}", "a") as f:
            f.write(json.dumps({{"trace": trace}}) + "\\n")
        asyncio.run(publish(b"again", trace))
"""


@pytest.mark.timeout(120)
def test_an_amqp_loop_stops_after_16(router_factory: RouterFactory, tmp_path: Path, amqp_url: str) -> None:
    import asyncio

    import aio_pika

    queue, dead = f"test-loop-{uuid.uuid4().hex[:8]}", f"test-loop-dead-{uuid.uuid4().hex[:8]}"

    async def broker(fn: Any) -> Any:
        conn = await aio_pika.connect(amqp_url, timeout=10)
        try:
            return await fn(await conn.channel())
        finally:
            await conn.close()

    async def declare(channel: Any) -> None:
        await channel.declare_queue(dead, durable=True)
        await channel.declare_queue(queue, durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})

    async def delete(channel: Any) -> None:
        for name in (queue, dead, queue + ".router-delay"):
            await channel.queue_delete(name)

    async def dead_count(channel: Any) -> int:
        q = await channel.declare_queue(dead, passive=True)
        return int(q.declaration_result.message_count)

    asyncio.run(broker(declare))
    try:
        record = tmp_path / "seen.jsonl"
        router_factory.write_function("loop", AMQP_HANDLER.format(url=amqp_url, queue=queue, seen=record))
        rp = router_factory(f"""
            version: 1
            server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
            state: sqlite:///{tmp_path / 'state.db'}
            functions:
              loop:
                runtime: python3.11
                handler: app.handler
                code: {tmp_path / 'functions' / 'loop'}
                timeout: 20s
            routes:
              - name: loop-queue
                source: {{type: amqp, url: "{amqp_url}", queue: {queue}, batch_size: 1, batch_window: 0s,
                          declare: false}}
                function: loop
        """)
        asyncio.run(broker(lambda ch: ch.default_exchange.publish(aio_pika.Message(b"first"),
                                                                   routing_key=queue)))
        until_sync(lambda: metric(rp, "router_recursive_loops_total", function="loop") >= 1,
                   "the 17th invocation refused", deadline=60)
        key = lineage.function_key("arn:aws:lambda:us-east-1:000000000000:function:loop")
        assert [lineage.hops(r["trace"], key) for r in seen(record)] == list(range(1, LIMIT + 1))
        # The refused message took the route's on_error path: the queue's dead-letter exchange.
        until_sync(lambda: asyncio.run(broker(dead_count)) == 1, "the refused message dead-lettered")
        logs = loop_logs(rp)
        assert len(logs) == 1, logs
        assert logs[0]["route"] == "loop-queue"
    finally:
        asyncio.run(broker(delete))


# --- a destination that feeds the queue the function's own route reads --------------------------------

RECORDING_HANDLER = """
    import json, os

    def handler(event, context):
        with open("{seen}", "a") as f:
            f.write(json.dumps({{"trace": os.environ["_X_AMZN_TRACE_ID"],
                                 "record": "Records" in event or "rmqMessagesByQueue" in event}}) + "\\n")
        return {{"ok": True}}
"""


def _destination_config(tmp_path: Path, *, destination: str, route: str, aws: str = "") -> str:
    return f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        {aws}
        functions:
          loop:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'loop'}
            async:
              on_success: {destination}
        routes:
          - name: back
            source: {route}
            function: loop
    """


def _chain_of_two(rp: RouterProcess, record: Path) -> None:
    """The async invocation (hop 1) sent its record through the destination; the route read it back and
    invoked the function again as hop 2 of the same chain (pollers are sync: no destination, the end)."""
    status, _, body = http("POST", f"{rp.url}/2015-03-31/functions/loop/invocations", b'{"n": 1}',
                           {"X-Amz-Invocation-Type": "Event"})
    assert status == 202, body
    until_sync(lambda: len(seen(record)) == 2, "the async invocation and the route's", deadline=60)
    first, second = seen(record)
    key = lineage.function_key(f"arn:aws:lambda:{REGION}:000000000000:function:loop")
    assert (first["record"], second["record"]) == (False, True)
    assert (lineage.hops(first["trace"], key), lineage.hops(second["trace"], key)) == (1, 2)
    assert lineage.root(first["trace"]) == lineage.root(second["trace"])


@pytest.mark.timeout(120)
def test_an_sqs_destination_carries_the_count_to_the_route_that_reads_it(
    router_factory: RouterFactory, tmp_path: Path, moto_server: str, sqs_client: Any,
) -> None:
    queue_url = sqs_client.create_queue(QueueName=f"back-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    record = tmp_path / "seen.jsonl"
    router_factory.write_function("loop", RECORDING_HANDLER.format(seen=record))
    rp = router_factory(_destination_config(
        tmp_path, destination=f'{{type: sqs, queue_url: "{queue_url}"}}',
        route=f'{{type: sqs, queue_url: "{queue_url}", batch_size: 1}}',
        aws=f'aws: {{region: {REGION}, endpoint_url: "{moto_server}"}}'))
    _chain_of_two(rp, record)


@pytest.mark.timeout(120)
def test_an_amqp_destination_carries_the_count_to_the_route_that_reads_it(
    router_factory: RouterFactory, tmp_path: Path, amqp_url: str,
) -> None:
    import asyncio

    import aio_pika

    queue = f"test-back-{uuid.uuid4().hex[:8]}"

    async def broker(declare: bool) -> None:
        conn = await aio_pika.connect(amqp_url, timeout=10)
        try:
            channel = await conn.channel()
            if declare:
                await channel.declare_queue(queue, durable=True)
            else:
                await channel.queue_delete(queue)
        finally:
            await conn.close()

    asyncio.run(broker(True))
    try:
        record = tmp_path / "seen.jsonl"
        router_factory.write_function("loop", RECORDING_HANDLER.format(seen=record))
        rp = router_factory(_destination_config(
            tmp_path, destination=f'{{type: amqp, url: "{amqp_url}", exchange: "", routing_key: {queue}}}',
            route=f'{{type: amqp, url: "{amqp_url}", queue: {queue}, batch_size: 1, batch_window: 0s}}'))
        _chain_of_two(rp, record)
    finally:
        asyncio.run(broker(False))


# --- a function that invokes itself through the Invoke API with boto3 ---------------------------------

# botocore adds X-Amzn-Trace-Id (the function's _X_AMZN_TRACE_ID) to every call by itself.
INVOKE_HANDLER = """
    import json, os
    import boto3

    client = boto3.client("lambda", endpoint_url=os.environ["ROUTER_URL"], region_name="{region}")

    def handler(event, context):
        with open("{seen}", "a") as f:
            f.write(json.dumps({{"trace": os.environ["_X_AMZN_TRACE_ID"]}}) + "\\n")
        client.invoke(FunctionName="loop", InvocationType="Event", Payload=b"{{}}")
"""


@pytest.mark.timeout(120)
def test_a_function_invoking_itself_through_the_invoke_api_stops_after_16(
    router_factory: RouterFactory, tmp_path: Path,
) -> None:
    record = tmp_path / "seen.jsonl"
    router_factory.write_function("loop", INVOKE_HANDLER.format(region=REGION, seen=record))
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@, shutdown_timeout: 5s}}
        state: sqlite:///{tmp_path / 'state.db'}
        aws: {{region: {REGION}}}
        functions:
          loop:
            runtime: python3.11
            handler: app.handler
            code: {tmp_path / 'functions' / 'loop'}
            timeout: 20s
            environment: {{ROUTER_URL: "http://127.0.0.1:@PORT@", AWS_ACCESS_KEY_ID: x,
                           AWS_SECRET_ACCESS_KEY: x}}
            async:
              retries: 0
              on_failure: {{type: file, path: {tmp_path / 'failed.jsonl'}}}
    """)
    client = boto3.client("lambda", endpoint_url=rp.url, region_name=REGION, aws_access_key_id="x",
                          aws_secret_access_key="x")
    client.invoke(FunctionName="loop", InvocationType="Event", Payload=b"{}")
    failed = tmp_path / "failed.jsonl"
    until_sync(failed.exists, "the refused event's on_failure record", deadline=60)
    key = lineage.function_key(f"arn:aws:lambda:{REGION}:000000000000:function:loop")
    assert [lineage.hops(r["trace"], key) for r in seen(record)] == list(range(1, LIMIT + 1))
    (refused,) = seen(failed)
    assert refused["responsePayload"]["errorType"] == "RecursiveInvocationException"
    assert metric(rp, "router_recursive_loops_total", function="loop") == 1

    # A synchronous call past the limit is Lambda's 400 RecursiveInvocationException, as botocore knows it.
    trace = seen(record)[-1]["trace"]  # the 16th invocation's: a call from it is the 17th

    def from_the_16th(request: Any, **_: Any) -> None:
        request.headers["X-Amzn-Trace-Id"] = trace

    client.meta.events.register("before-send.lambda.Invoke", from_the_16th)
    with pytest.raises(client.exceptions.RecursiveInvocationException, match="invoked it 16 times") as info:
        client.invoke(FunctionName="loop", Payload=b"{}")
    assert "invoked it 16 times" in info.value.response["Message"]  # the model's member
    # InvokeWithResponseStream declares the same error, not a 200 whose stream ends with it
    client.meta.events.register("before-send.lambda.InvokeWithResponseStream", from_the_16th)
    with pytest.raises(client.exceptions.RecursiveInvocationException, match="invoked it 16 times"):
        client.invoke_with_response_stream(FunctionName="loop", Payload=b"{}")
    assert len(seen(record)) == LIMIT
    client.close()
