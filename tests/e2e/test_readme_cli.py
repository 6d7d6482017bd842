"""README's quickstart `aws lambda invoke` command, exactly as written there, with the AWS CLI v1 the
test extra installs (``pip install awscli``), against `make run`'s config/example.yaml."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.router_process import ROOT, RouterFactory, free_port
from tests.unavailable import unavailable


def readme_invoke_commands() -> str:
    """The quickstart's ``echo ... > event.json`` and ``aws lambda invoke ...`` lines (continuations kept)."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^echo '\{\}' > event\.json.*\naws lambda invoke [^\n]*\\\n[^\n]*\n", text, re.MULTILINE)
    assert m is not None, "README's quickstart has no `echo ... > event.json` + `aws lambda invoke` lines"
    return m.group(0)


def test_readme_invoke_command_works_with_the_v1_cli(router_factory: RouterFactory, tmp_path: Path) -> None:
    aws = shutil.which("aws") or str(Path(sys.executable).with_name("aws"))
    if not Path(aws).exists():
        unavailable("the AWS CLI (aws) is not installed; pip install awscli")
    version = subprocess.run([aws, "--version"], capture_output=True, text=True, timeout=60)
    assert (version.stdout + version.stderr).startswith("aws-cli/1."), version  # what pip install gives
    commands = readme_invoke_commands()
    assert "--cli-binary-format" not in commands  # v1 refuses the whole command with it
    (tmp_path / "config").mkdir()
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    port = free_port()
    rp = router_factory((ROOT / "config" / "example.yaml").read_text(), name="config/example.yaml",
                        port=port, env={"ROUTER_PORT": str(port), "ROUTER_STATE_DIR": str(tmp_path / "var")})
    work = tmp_path / "cli"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PATH=f"{Path(aws).parent}{os.pathsep}{env.get('PATH', '')}",
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    script = commands.replace("http://localhost:8080", rp.url)
    done = subprocess.run(["bash", "-ec", script], cwd=work, capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    answer = json.loads((work / "out.json").read_text())
    assert answer["statusCode"] == 200, answer
    assert '"StatusCode": 200' in done.stdout
