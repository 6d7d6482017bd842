"""A bare Lambda Runtime API client: the least a worker can do (stdlib http.client, one keep-alive
connection, no context object, no log lines). Exits when the API goes away.

Reads AWS_LAMBDA_RUNTIME_API, LAMBDA_TASK_ROOT and _HANDLER (module.function) like any bootstrap.
"""

import http.client
import importlib
import json
import os
import sys

PREFIX = "/2018-06-01/runtime"


def main() -> None:
    host, _, port = os.environ["AWS_LAMBDA_RUNTIME_API"].partition(":")
    sys.path.insert(0, os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())
    module, _, name = os.environ["_HANDLER"].rpartition(".")
    handler = getattr(importlib.import_module(module), name)
    conn = http.client.HTTPConnection(host, int(port or 80))
    headers = {"Content-Type": "application/json"}
    try:
        while True:
            conn.request("GET", f"{PREFIX}/invocation/next")
            r = conn.getresponse()
            event = json.loads(r.read())
            request_id = r.getheader("Lambda-Runtime-Aws-Request-Id")
            try:
                body = json.dumps(handler(event, None)).encode()
                path = f"{PREFIX}/invocation/{request_id}/response"
            except Exception as exc:
                body = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
                path = f"{PREFIX}/invocation/{request_id}/error"
            conn.request("POST", path, body=body, headers=headers)
            conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return


if __name__ == "__main__":
    main()
