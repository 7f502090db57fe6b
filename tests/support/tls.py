"""Throwaway certificates for 127.0.0.1, for loopback servers that speak TLS as real
providers (and a TLS redis-server) do."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path


def self_signed() -> tuple[bytes, bytes]:
    """A fresh self-signed certificate for 127.0.0.1 (also its own CA) and its key, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def loopback_cert_files(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """`self_signed()` written to <folder>/<name>.pem and <name>.key: (certificate, key)."""
    pem, key = self_signed()
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}.key"
    cert_file.write_bytes(pem)
    key_file.write_bytes(key)
    return cert_file, key_file


def loopback_tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context that trusts only that server's certificate)."""
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = loopback_cert_files(Path(tmp))
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_file, key_file)
        pem = cert_file.read_text()
    client = ssl.create_default_context(cadata=pem)
    return server, client
