"""The examples behave like `kaito ui`: private by default through the Streamlit config shipped with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps.browser import wait_for_streamlit
from tests.netutil import free_port

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE_APP = EXAMPLES / "phi4_chat_app.py"

READ_CONFIG = """
import json, sys
from streamlit import config
config._main_script_path = sys.argv[1]
config.get_config_options(force_reparse=True)
names = ["server.address", "browser.gatherUsageStats", "client.toolbarMode", "server.headless"]
print(json.dumps({name: config.get_option(name) for name in names}))
"""


def test_streamlit_reads_the_private_settings_next_to_the_example(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", READ_CONFIG, str(EXAMPLE_APP)],
        cwd=tmp_path,  # not the project: the settings come from examples/.streamlit
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == {
        "server.address": "127.0.0.1",
        "browser.gatherUsageStats": False,
        "client.toolbarMode": "minimal",  # no Deploy button
        "server.headless": True,
    }


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_streamlit_run_on_the_example_listens_on_this_machine_only(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(EXAMPLE_APP), f"--server.port={port}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "KAITO_ENDPOINT": f"http://127.0.0.1:{free_port()}"},
    )
    try:
        wait_for_streamlit(process, f"http://127.0.0.1:{port}", "the example")
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "Network URL" not in output and "External URL" not in output


def test_the_examples_say_what_to_activate_without_pykaito(tmp_path: Path) -> None:
    """With a Python that lacks pykaito (here: isolated, no site packages), one line, no traceback."""
    for example in ("phi4_chat_cli.py", "phi4_chat_app.py"):
        result = subprocess.run(
            [sys.executable, "-I", "-S", str(EXAMPLES / example)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "source .venv/bin/activate" in result.stderr
