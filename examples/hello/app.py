"""A webhook handler: answers with an API Gateway response, as on AWS Lambda behind an HTTP API."""

import json
import os

# Init code runs once per execution environment; globals persist between warm invocations.
COLD_START = True


def handler(event, context):
    global COLD_START
    cold, COLD_START = COLD_START, False
    name = (event.get("pathParameters") or {}).get("name") or "world"
    print(f"saying hello to {name}")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "message": f"hello, {name}",
                "requestId": context.aws_request_id,
                "function": context.function_name,
                "coldStart": cold,
                "greeting": os.environ.get("GREETING", "hello"),
            }
        ),
    }
