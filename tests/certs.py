"""Throw-away certificates for TLS tests: a CA and leaves it signs."""
from __future__ import annotations

import datetime
import ipaddress
import os
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_KEY_PEM = dict(encoding=serialization.Encoding.PEM, format=serialization.PrivateFormat.PKCS8,
                encryption_algorithm=serialization.NoEncryption())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(directory: str, addresses: tuple[str, ...] = ("127.0.0.1",),
                      ca: Optional[tuple] = None) -> dict[str, str]:
    """Write ca.pem, cert.pem (with its key appended) and key.pem into
    C{directory}; the leaf names C{addresses}. Returns the paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    if ca is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (x509.CertificateBuilder().subject_name(_name("sipproxy test CA")).issuer_name(_name("sipproxy test CA"))
                   .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
    else:
        ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    alt = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(a)) for a in addresses])
    cert = (x509.CertificateBuilder().subject_name(_name(addresses[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(alt, critical=False).sign(ca_key, hashes.SHA256()))
    paths = {name: os.path.join(directory, name + ".pem") for name in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as f:
        f.write(key.private_bytes(**_KEY_PEM))
    with open(paths["cert"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(**_KEY_PEM))
    paths["ca_pair"] = (ca_key, ca_cert)  # type: ignore[assignment]
    return paths
