"""The admission webhook over TLS, with a certificate shaped like the chart's Secret, and its renewal.

The certificates are made as the chart makes them (a self-signed CA "<release>-webhook-ca" and a
serving certificate for the webhook Service's DNS names, files ca.crt, tls.crt and tls.key as the
Secret mounts them). The client checks them as the API server does: against the CA bundle, for the
Service's DNS name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netutil import free_port
from tests.operator.cluster import eventually, example
from tests.operator.kube_emulator import KubeEmulator
from tests.operator.test_operator_process import review

SERVICE = "pykaito-webhook"
NAMESPACE = "kaito-system"
HOST = f"{SERVICE}.{NAMESPACE}.svc"
DNS_NAMES = [SERVICE, f"{SERVICE}.{NAMESPACE}", HOST, f"{HOST}.cluster.local"]


def make_secret(directory: Path, tag: str) -> Path:
    """ca.crt, tls.crt and tls.key as the chart's genCA and genSignedCert make them; returns ca.crt."""
    work = directory.parent / f"make-{tag}"
    work.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)

    key = ["-newkey", "rsa:2048", "-nodes"]
    openssl(
        "req",
        "-x509",
        *key,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=pykaito-webhook-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        f"/CN={HOST}",
    )
    (work / "san.ext").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in DNS_NAMES) + "\n")
    openssl(
        "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "tls.crt", "-extfile", "san.ext",
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "tls.crt", "tls.key"):  # replaced whole, as the kubelet swaps a Secret volume
        staged = directory / f".{name}.new"
        staged.write_bytes((work / name).read_bytes())
        staged.replace(directory / name)
    return work / "ca.crt"


async def admit(port: int, ca: Path, body: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview over TLS, verifying the server as the API server does."""
    context = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=HOST)
    try:
        payload = json.dumps(body).encode()
        head = (
            f"POST /validate-workspace HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout=5)
    status_line, _, rest = raw.partition(b"\r\n")
    assert b" 200 " in status_line, raw[:500]
    result: dict[str, Any] = json.loads(rest.partition(b"\r\n\r\n")[2])
    return result


async def handshake_ok(port: int, ca: Path) -> bool:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=HOST)
    except (ssl.SSLCertVerificationError, ConnectionError, OSError):
        return False
    writer.close()
    with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout=5)
    return True


@pytest.mark.timeout(180)
async def test_webhook_serves_tls_and_picks_up_a_renewed_certificate(
    kube: KubeEmulator, tmp_path: Path
) -> None:
    secret = tmp_path / "webhook-cert"  # the Secret's mount point
    first_ca = make_secret(secret, "first")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "KAITO_OPERATOR_WEBHOOK_ENABLED": "true",
        "KAITO_OPERATOR_WEBHOOK_PORT": str(port),
        "KAITO_OPERATOR_WEBHOOK_HOST": HOST,
        "KAITO_OPERATOR_WEBHOOK_CERTFILE": str(secret / "tls.crt"),
        "KAITO_OPERATOR_WEBHOOK_PKEYFILE": str(secret / "tls.key"),
        "KAITO_OPERATOR_WEBHOOK_CAFILE": str(secret / "ca.crt"),
        "KAITO_OPERATOR_WEBHOOK_RELOAD_SECONDS": "0.5",
    }
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pykaito.operator", "--all-namespaces", "--liveness-port", "0",
            env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await eventually(lambda: handshake_ok(port, first_ca), timeout=60)

        bad = example("workspace-phi-4-mini-h100.yaml")
        bad["metadata"] = {"name": "bad", "namespace": "default"}
        bad["inference"]["preset"]["name"] = "phi-5-giant"
        answer = await admit(port, first_ca, review(bad))
        assert answer["response"]["allowed"] is False
        assert "inference.preset.name" in answer["response"]["status"]["message"]
        good = example("workspace-phi-4-mini-h100.yaml")
        good["metadata"]["namespace"] = "default"
        assert (await admit(port, first_ca, review(good)))["response"]["allowed"] is True

        # a client that does not trust the chart's CA is refused: this really is that certificate
        assert not await handshake_ok(port, tmp_path / "make-first" / "tls.crt")

        second_ca = make_secret(secret, "second")  # renewed: a new CA and a new serving certificate
        await eventually(lambda: handshake_ok(port, second_ca), timeout=30)
        assert not await handshake_ok(port, first_ca)
        assert (await admit(port, second_ca, review(good)))["response"]["allowed"] is True
        assert process.returncode is None  # the same process, never restarted
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from exc
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
    assert process.returncode == 0, log.read_text()[-3000:]
