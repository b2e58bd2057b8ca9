"""TLS on both sides: the router serves HTTPS and verifies HTTPS backends (a test CA)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmops.errors import ConfigError
from llmops.openai import SSEParser
from llmops.router.app import running_router
from llmops.router.tls import VERIFY_OFF_WARNING
from llmops.sim import SimOptions
from llmops.sim.engine import Engine
from llmops.sim.faults import Faults
from llmops.sim.handlers import SimState, build_app
from tests.conftest import StartRouter, serving

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing here


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_ca(path: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a certificate for 127.0.0.1/localhost that it signed."""
    root = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _write_ca(root / "ca.pem", "llmops test CA")
    _write_ca(root / "other-ca.pem", "some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Pki(root / "ca.pem", root / "cert.pem", root / "key.pem", root / "other-ca.pem")


@contextlib.asynccontextmanager
async def https_sim(pki: Pki, **options: object) -> AsyncIterator[tuple[str, SimState]]:
    """The real sim application served over HTTPS by a test-local site (sim code unchanged)."""
    sim_options = SimOptions(port=0, model="m", ttft_ms=5, itl_ms=2, **options)  # type: ignore[arg-type]
    engine = Engine(sim_options)
    faults = Faults(sim_options, engine)
    state = SimState(sim_options, engine, faults)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    async with serving(
        build_app(state), context, handler_cancellation=True, shutdown_timeout=1
    ) as url:
        engine.start()
        try:
            yield url, state
        finally:
            faults.close()
            await engine.close()


def client_context(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def tls_config(pki: Pki, backend: str, **sections: object) -> dict[str, object]:
    return {
        "server": {"tls": {"cert": str(pki.cert), "key": str(pki.key)}},
        "model_list": [{"model_name": "m", "litellm_params": {"api_base": f"{backend}/v1"}}],
        **sections,
    }


async def test_https_router_in_front_of_an_https_backend(
    pki: Pki, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    async with https_sim(pki) as (backend, state):
        url = await start_router(tls_config(pki, backend, upstream_tls={"ca_bundle": str(pki.ca)}))
        assert url.startswith("https://127.0.0.1:")
        secure = client_context(pki)
        async with http.post(f"{url}/v1/chat/completions", json=CHAT, ssl=secure) as response:
            assert response.status == 200
            assert (await response.json())["usage"]["completion_tokens"] == 4
        parser, payloads = SSEParser(), []
        stream = {**CHAT, "stream": True}
        async with http.post(f"{url}/v1/chat/completions", json=stream, ssl=secure) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                payloads.extend(parser.feed(chunk))
        assert payloads[-1] == b"[DONE]"
        async with http.get(f"{url}/ready", ssl=secure) as response:
            assert response.status == 200  # health checks verified the backend too
        assert state.requests == 2

        # The router speaks only TLS on its port, and clients verify it.
        with pytest.raises(aiohttp.ClientError):
            async with http.get(url.replace("https://", "http://") + "/health") as response:
                await response.read()
        other = ssl.create_default_context(cafile=str(pki.other_ca))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(f"{url}/health", ssl=other):
                pass


async def test_backend_with_an_untrusted_certificate_is_not_used(
    pki: Pki, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    async with https_sim(pki) as (backend, state):
        config = tls_config(
            pki,
            backend,
            upstream_tls={"ca_bundle": str(pki.other_ca)},
            health_check={"enabled": False},
            routing={"num_retries": 0},
        )
        url = await start_router(config)
        async with http.post(
            f"{url}/v1/chat/completions", json=CHAT, ssl=client_context(pki)
        ) as response:
            assert response.status in (502, 503)
            body = await response.json()
        assert body["error"]["type"] in ("upstream_error", "service_unavailable")
        assert state.requests == 0  # the handshake failed: the request never went out


async def test_verify_false_works_and_is_logged_loudly(
    pki: Pki,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with https_sim(pki) as (backend, state):
        with caplog.at_level(logging.WARNING, logger="llmops.router"):
            url = await start_router(tls_config(pki, backend, upstream_tls={"verify": False}))
        assert [r.getMessage() for r in caplog.records].count(VERIFY_OFF_WARNING) == 1
        assert caplog.records[0].levelno == logging.WARNING
        async with http.post(
            f"{url}/v1/chat/completions", json=CHAT, ssl=client_context(pki)
        ) as response:
            assert response.status == 200
        assert state.requests == 1


async def test_unreadable_certificate_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "router.yaml"
    config = tls_config(pki, "https://127.0.0.1:9")
    config["server"] = {"tls": {"cert": str(pki.cert), "key": str(tmp_path / "missing.pem")}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"server\.tls: cannot load certificate"):
        async with running_router(path, "127.0.0.1", 0):
            pass


async def test_connection_cap_answers_503_over_tls(pki: Pki, start_router: StartRouter) -> None:
    async with https_sim(pki) as (backend, _state):
        config = tls_config(pki, backend, upstream_tls={"ca_bundle": str(pki.ca)})
        config["server"]["max_connections"] = 1  # type: ignore[index]
        url = await start_router(config)
        host, port = url.removeprefix("https://").rsplit(":", 1)
        request = b"GET /health HTTP/1.1\r\nHost: r\r\n\r\n"
        held_reader, held = await asyncio.open_connection(host, int(port), ssl=client_context(pki))
        held.write(request)
        assert (await held_reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        reader, writer = await asyncio.open_connection(host, int(port), ssl=client_context(pki))
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 10)  # the router closes after the 503
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
        assert b'"too_many_connections"' in answer
        for stream in (writer, held):
            stream.close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await stream.wait_closed()
