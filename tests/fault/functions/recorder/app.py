"""The fault suite's test function: records, for every id in the event, one file ``<id>.<unique>`` in
``$SEEN_DIR`` (the side effect the checker reads), then sleeps ``$SLEEP`` seconds per invocation so
batches stay in flight while a fault is injected.

Understands every event the router sends it: API Gateway v2 (webhook: the id is the body), an Invoke API
or async payload ``{"id": ...}``, SQS, Kinesis, DynamoDB Streams (the item's ``pk``) and RabbitMQ
(``rmqMessagesByQueue``) records. An id never contains a dot.
"""

import base64
import json
import os
import time
import uuid

SEEN = os.environ["SEEN_DIR"]
SLEEP = float(os.environ.get("SLEEP", "0"))


def ids_of(event):
    if isinstance(event, dict) and "rmqMessagesByQueue" in event:
        return [base64.b64decode(m["data"]).decode()
                for messages in event["rmqMessagesByQueue"].values() for m in messages]
    if isinstance(event, dict) and "Records" in event:
        out = []
        for r in event["Records"]:
            if r.get("eventSource") == "aws:sqs":
                out.append(r["body"])
            elif r.get("eventSource") == "aws:kinesis":
                out.append(base64.b64decode(r["kinesis"]["data"]).decode())
            elif r.get("eventSource") == "aws:dynamodb":
                out.append(r["dynamodb"]["Keys"]["pk"]["S"])
            else:
                raise ValueError(f"unknown record source {r.get('eventSource')!r}")
        return out
    if isinstance(event, dict) and event.get("version") == "2.0" and "routeKey" in event:
        body = event.get("body") or ""
        return [base64.b64decode(body).decode() if event.get("isBase64Encoded") else body]
    if isinstance(event, dict) and "id" in event:
        return [str(event["id"])]
    raise ValueError(f"cannot find an id in {json.dumps(event)[:200]}")


def handler(event, context):
    ids = ids_of(event)
    tag = uuid.uuid4().hex
    for i in ids:
        with open(os.path.join(SEEN, f"{i}.{tag}"), "w") as f:
            f.write(context.aws_request_id)
    if SLEEP:
        time.sleep(SLEEP)
    return {"statusCode": 200, "body": "ok"} if "routeKey" in event else {"batchItemFailures": []}
