"""An init that fails, seen from outside a real ``router run``: the Invoke API's LogType Tail carries
the init's own output and Lambda's platform lines for it (INIT_REPORT, START, END, REPORT with
``Status: error`` and the error type), as ``aws lambda invoke --log-type Tail`` shows them on Lambda."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

from tests.router_process import RouterFactory, http
from tests.unit.runtime.node_support import FIXTURES

PYTHON_RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"


def test_the_tail_of_a_failed_init(router_factory: RouterFactory, tmp_path: Path) -> None:
    rp = router_factory(f"""
        version: 1
        server: {{host: 127.0.0.1, port: @PORT@}}
        state: sqlite:///{tmp_path / 'state.db'}
        functions:
          broken:
            runtime: {PYTHON_RUNTIME}
            handler: app.handler
            code: {FIXTURES / 'init_error'}
    """)
    status, headers, body = http("POST", f"{rp.url}/2015-03-31/functions/broken/invocations",
                                 b"{}", {"X-Amz-Log-Type": "Tail"})
    assert status == 200, body
    assert headers["x-amz-function-error"] == "Unhandled"
    assert json.loads(body)["errorType"] == "Runtime.ImportModuleError"
    request_id = headers["x-amzn-requestid"]
    tail = base64.b64decode(headers["x-amz-log-result"]).decode().splitlines()
    assert any(line.startswith("[ERROR] Runtime.ImportModuleError: Unable to import module 'app'")
               for line in tail), tail
    assert re.fullmatch(r"INIT_REPORT Init Duration: \d+\.\d\d ms\tPhase: invoke\tStatus: error"
                        r"\tError Type: Runtime\.ImportModuleError", tail[-4]), tail
    assert tail[-3:-1] == [f"START RequestId: {request_id} Version: $LATEST", f"END RequestId: {request_id}"]
    assert re.fullmatch(rf"REPORT RequestId: {request_id}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms"
                        r"\tMemory Size: 128 MB\tMax Memory Used: \d+ MB\tStatus: error"
                        r"\tError Type: Runtime\.ImportModuleError", tail[-1]), tail
    rp.stop()
