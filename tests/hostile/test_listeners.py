"""The gateway's listeners: HTTPS with client certificates (mutual TLS) when configured, a TLS handshake
under a deadline, and /metrics on a listener of its own (the ingress port then has none)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from redis.asyncio import Redis

from gateway.core.local_servers import free_port
from gateway.core.settings import ConfigError, Settings
from gateway.server import tls_context
from tests.gateway.helpers import assert_error_shape
from tests.hostile.conftest import GatewayFactory, closed_by_server, raw_exchange
from tests.support import Client, RedisServer, make_event
from tests.workers.flows import PUSHGW, ready_gateways, start_gateway

pytestmark = pytest.mark.e2e


async def test_metrics_are_on_the_ingress_port_by_default(gateway_for: GatewayFactory) -> None:
    served = await gateway_for()
    assert served.listening.metrics_url is None
    async with served.session.get(served.url + "/metrics") as response:
        assert response.status == 200
        assert "pushgw_http_requests_total" in await response.text()


async def test_metrics_on_their_own_listener_leave_the_ingress_port(gateway_for: GatewayFactory) -> None:
    port = free_port()
    served = await gateway_for(gateway_metrics_port=port)
    assert served.listening.metrics_url == f"http://127.0.0.1:{port}"
    status, body = await served.get("/metrics")
    assert status == 404
    assert_error_shape(body)
    async with served.session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Server"] == "pushgw"
        assert "pushgw_http_requests_total" in await response.text()
    async with served.session.get(f"http://127.0.0.1:{port}/healthz") as response:
        assert response.status == 200
    assert (await served.client.post_event(make_event()))[0] == 202


# --- TLS ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and client certificates, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate of another CA
    rogue_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage, critical=True)
    else:
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _issue("pushgw test CA", None, ca=True)
    rogue_ca_cert, rogue_ca_key = _issue("another CA", None, ca=True)
    ca = _write(directory, "ca", ca_cert, ca_key)
    server = _write(directory, "server", *_issue("gateway", (ca_cert.subject, ca_key), server=True))
    client = _write(directory, "client", *_issue("core-banking", (ca_cert.subject, ca_key)))
    rogue = _write(directory, "rogue", *_issue("core-banking", (rogue_ca_cert.subject, rogue_ca_key)))
    return Pki(
        ca,
        server,
        server.with_suffix(".key"),
        client,
        client.with_suffix(".key"),
        rogue,
        rogue.with_suffix(".key"),
    )


def _client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


async def _signed_post(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        status, _ = await Client(session, url).post_event(make_event())
        return status


async def test_https_without_client_certificates(gateway_for: GatewayFactory, pki: Pki) -> None:
    served = await gateway_for(tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key))
    assert served.url.startswith("https://")
    assert await _signed_post(served.url, _client_context(pki)) == 202


async def test_mutual_tls_lets_only_a_client_certificate_of_the_ca_through(
    gateway_for: GatewayFactory, pki: Pki
) -> None:
    served = await gateway_for(
        tls_cert_file=str(pki.server_cert),
        tls_key_file=str(pki.server_key),
        tls_client_ca_file=str(pki.ca),
    )
    assert await _signed_post(served.url, _client_context(pki, pki.client_cert, pki.client_key)) == 202
    for refused in (_client_context(pki), _client_context(pki, pki.rogue_cert, pki.rogue_key)):
        with pytest.raises(aiohttp.ClientError):
            await _signed_post(served.url, refused)


async def test_a_tls_handshake_not_begun_in_time_is_cut(gateway_for: GatewayFactory, pki: Pki) -> None:
    served = await gateway_for(
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), header_timeout_s=0.5
    )
    reader, writer = await asyncio.open_connection(*served.address)
    try:
        assert await closed_by_server(reader, within_s=5)
    finally:
        writer.close()


def test_the_tls_context_is_tls12_or_later_and_requires_client_certificates(pki: Pki) -> None:
    settings = Settings(
        tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key), tls_client_ca_file=str(pki.ca)
    )
    context = tls_context(settings)
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert tls_context(Settings()) is None


def test_unusable_tls_settings_name_their_variable(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PUSHGW_TLS_KEY_FILE"):
        Settings.from_env({"PUSHGW_TLS_CERT_FILE": str(pki.server_cert)})
    with pytest.raises(ConfigError, match="PUSHGW_TLS_CLIENT_CA_FILE"):
        Settings.from_env({"PUSHGW_TLS_CLIENT_CA_FILE": str(pki.ca)})
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="PUSHGW_TLS_CERT_FILE"):
        tls_context(Settings(tls_cert_file=missing, tls_key_file=missing))
    with pytest.raises(ConfigError, match="PUSHGW_TLS_CLIENT_CA_FILE"):
        tls_context(
            Settings(
                tls_cert_file=str(pki.server_cert),
                tls_key_file=str(pki.server_key),
                tls_client_ca_file=missing,
            )
        )


async def test_pushgw_gateway_serves_through_the_guarded_transport(
    redis_server: RedisServer, redis: Redis
) -> None:
    """The real command: a framing error in the error shape, no version, /metrics on its own port."""
    metrics_port = free_port()
    started = start_gateway([PUSHGW], redis_server.url, PUSHGW_GATEWAY_METRICS_PORT=str(metrics_port))
    async with ready_gateways([started]) as [url], aiohttp.ClientSession() as session:
        port = int(url.rsplit(":", 1)[1])
        answer = await raw_exchange(("127.0.0.1", port), b"GET /\x00 HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert answer.status == 400 and answer.headers["server"] == "pushgw"
        assert_error_shape(answer.json())
        async with session.get(url + "/metrics") as response:
            assert response.status == 404
        async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            assert response.status == 200
