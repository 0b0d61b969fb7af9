"""TLS for tests and benchmarks: a certificate authority made on the spot,
and a TLS terminator in front of the embedded broker (which speaks plain
TCP only). Not used by the hub at run time.

    ca = TestCA(tmp_path)                                 # ca.pem
    server = ca.issue("broker", ["127.0.0.1", "localhost"])  # broker.pem, broker.key
    proxy = TlsProxy(upstream_port=broker.port, cert=server).start()
    broker = EmbeddedBroker(advertised_port=proxy.port)   # clients are sent to the TLS port

The terminator (`python -m hub.testing.tls`) is a separate process, so the
test's own work and the bytes it relays do not share one interpreter: an
asyncio server with the `ssl` module, one upstream connection per client
connection. `client_ca` makes it ask for a client certificate (mutual TLS);
`tls=False` relays in plain text, for a like-for-like cost comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hub.connectors.embedded import free_port, stop_process


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path


class TestCA:
    """A self-signed CA written to `directory` (ca.pem), issuing server and client certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "hub test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (x509.CertificateBuilder().subject_name(self._name).issuer_name(self._name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - datetime.timedelta(minutes=5))
                      .not_valid_after(now + datetime.timedelta(days=2))
                      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                      .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                   content_commitment=False, key_encipherment=False,
                                                   data_encipherment=False, key_agreement=False,
                                                   encipher_only=False, decipher_only=False), critical=True)
                      .sign(self._key, hashes.SHA256()))
        slug = name.replace(" ", "-")
        self.path = self.directory / f"{slug}.pem"
        self.path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, hosts: list[str], client: bool = False, key_password: str | None = None) -> Issued:
        """A certificate for `hosts` (DNS names or IP addresses) signed by this CA, and its key."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else name)]))
                   .issuer_name(self._name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                         else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        encryption = (serialization.BestAvailableEncryption(key_password.encode()) if key_password
                      else serialization.NoEncryption())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        issued.certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 encryption))
        os.chmod(issued.key, 0o600)
        return issued


class TlsProxy:
    """`python -m hub.testing.tls` in a child process: TLS on `port`, plain TCP to the broker."""

    def __init__(self, upstream_port: int, cert: Issued | None = None, port: int | None = None,
                 client_ca: Path | None = None, tls: bool = True, log_path: Path | None = None):
        self.upstream_port = upstream_port
        self.cert = cert
        self.port = port or free_port()
        self.client_ca = client_ca
        self.tls = tls
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> "TlsProxy":
        args = [sys.executable, "-m", "hub.testing.tls", "--port", str(self.port),
                "--upstream-port", str(self.upstream_port)]
        if self.tls:
            args += ["--cert", str(self.cert.certificate), "--key", str(self.cert.key)]
            if self.client_ca:
                args += ["--client-ca", str(self.client_ca)]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=out, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        line = self.process.stdout.readline()  # "ready" once listening
        if line.strip() != b"ready" or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"TLS proxy did not start (exit {self.process and self.process.poll()}): {line!r}")
        return self

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(262_144)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def _serve(port: int, upstream_port: int, context: ssl.SSLContext | None) -> None:
    async def relay(client_reader, client_writer):
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, broker_writer), _pipe(broker_reader, client_writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port, ssl=context, backlog=256)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TLS terminator for tests: TLS on --port, TCP to --upstream-port")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--client-ca", help="require a client certificate signed by this CA")
    args = parser.parse_args(argv)
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            context.load_verify_locations(args.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.port, args.upstream_port, context))


if __name__ == "__main__":
    main()
