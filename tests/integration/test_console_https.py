"""``sentinel console`` serves HTTPS when ``console.tls_certfile``/``tls_keyfile`` are set.

A real console on the session broker, with a certificate from a throwaway CA
(:func:`streams.devtools.broker.make_certificates`): a client that trusts the CA gets the login
page over TLS with hostname checks on, a login sets a ``Secure``, ``HttpOnly``,
``SameSite=Strict`` cookie, and plain HTTP on the same port gets no page.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import urllib.parse
from pathlib import Path

import pytest

from streams.console.auth import hash_password
from streams.devtools.broker import free_port
from streams.devtools.certs import make_certificates
from tests.conftest import KafkaBroker, per_test_settings
from tests.integration.workers import wait_for, worker_process

pytestmark = pytest.mark.integration


def _plain_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_the_console_serves_https_with_secure_cookies(
    kafka_broker: KafkaBroker, tmp_path: Path, unique_name: str
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test certificate")
    tls = tmp_path / "tls"
    make_certificates(tls, "127.0.0.1")
    port = free_port()
    settings = per_test_settings(
        kafka_broker.url,
        tmp_path,
        f"h{unique_name}",
        **{
            "console.port": port,
            "console.tls_certfile": str(tls / "broker.pem"),
            "console.tls_keyfile": str(tls / "broker.pem"),
            "console.users": [
                {"name": "ops", "role": "operator", "password_hash": hash_password("pw-1")}
            ],
        },
    )
    context = ssl.create_default_context(cafile=str(tls / "ca.pem"))

    def get(path: str) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read().decode()
        finally:
            conn.close()

    def up() -> bool:
        try:
            return get("/healthz")[0] == 200
        except OSError:
            return False

    log = tmp_path / "console.log"
    with worker_process(settings, ["-m", "streams.cli.main", "console"], log):
        wait_for(up, 90, "the console over HTTPS", log)
        status, headers, body = get("/login")
        assert status == 200
        assert 'name="password"' in body
        assert "default-src 'self'" in headers["content-security-policy"]
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        form = urllib.parse.urlencode({"user": "ops", "password": "pw-1", "next": "/"})
        conn.request("POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.getresponse()
        cookie = resp.getheader("set-cookie") or ""
        conn.close()
        assert resp.status == 303
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"secure", "httponly", "samesite=strict"} <= flags, cookie
        health = json.loads(get("/healthz")[2])
        assert health["following"] is True
        with pytest.raises((http.client.HTTPException, OSError)):
            _plain_get(port, "/login")
