"""Certificates for the TLS tests, made with Python's `cryptography`: CAs, leaf certificates with
any key type (RSA 2048-4096, ECDSA P-256/P-384), signature hash (SHA-256/384/512), key file
format (PKCS#8, PKCS#1, SEC1), names (DNS, IP, URI SANs) and validity window."""
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}


def make_key(kind):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    curve = {"p256": ec.SECP256R1, "p384": ec.SECP384R1}[kind]
    return ec.generate_private_key(curve())


def key_pem(key, form="pkcs8"):
    """PEM of a private key: `pkcs8` (BEGIN PRIVATE KEY), or the traditional form of its type,
    `pkcs1` for RSA (BEGIN RSA PRIVATE KEY) and `sec1` for EC (BEGIN EC PRIVATE KEY)."""
    fmt = serialization.PrivateFormat.PKCS8 if form == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class Authority:
    """A CA that signs leaf certificates into files under `directory`."""

    def __init__(self, directory: Path, name="meshd test CA", key="p256", parent=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = make_key(key)
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        issuer_name = parent.name if parent else self.name
        signing_key = parent.key if parent else self.key
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(issuer_name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(signing_key, hashes.SHA256())
        )
        slug = name.replace(" ", "-")
        self.path = self.directory / f"{slug}.pem"
        self.path.write_bytes(cert_pem(self.cert))

    def issue(self, name, dns=(), ips=(), uris=(), key="p256", key_form="pkcs8", digest="sha256",
              not_before_days=-1, not_after_days=10, client=True, server=True, file_stem=None, organization=None):
        """Writes `<stem>.pem` and `<stem>.key`; returns (cert path, key path, certificate)."""
        leaf_key = make_key(key)
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else [])
                                    + [x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=not_after_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, HASHES[digest]())
        stem = file_stem or name.replace(" ", "-").replace("/", "_").replace(":", "_")
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert_pem(cert))
        key_path.write_bytes(key_pem(leaf_key, key_form))
        return cert_path, key_path, cert
