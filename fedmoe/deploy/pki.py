"""Certificates and keys for a Flower deployment, made with the ``cryptography`` package
(a dependency of flwr: no openssl or ssh-keygen, nothing downloaded).

* a certificate authority (``ca.crt``, ``ca.key``): every SuperNode and the operator's
  ``flwr`` CLI trust it to verify the SuperLink;
* the SuperLink's TLS certificate (``server.pem``, ``server.key``), signed by the CA, whose
  subject alternative names are the host names and IP addresses the SuperNodes dial;
* SuperNode authentication keys: ECDSA (NIST P-384 by default) key pairs in OpenSSH format
  (``supernode-K.key`` unencrypted private key, ``supernode-K.pub`` the
  ``ecdsa-sha2-nistp384 AAAA…`` line that ``flwr supernode register`` reads).

Files are written atomically (a temporary file in the same folder, then a rename) into a
folder of mode 0700; private keys get mode 0600, the other files the umask's mode (or 0600
too, for a deployment on one machine: ``private=True``). Nothing is overwritten unless
``force=True``, and when a file would be overwritten nothing at all is written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmoe.errors import UsageError
from fedmoe.files import write_atomic

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
"""Subject alternative names of the server certificate unless told otherwise."""

DEFAULT_DAYS = 365
CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1}
"""SuperNode key curves Flower accepts (NIST curves); P-384 is the default."""

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class PKIError(UsageError):
    """A bad argument or a file that would be overwritten (one-line message)."""


def supernode_key_names(k: int) -> tuple[str, str]:
    """File names of SuperNode ``k``'s private and public key."""
    return f"supernode-{k}.key", f"supernode-{k}.pub"


# --------------------------------------------------------------------------- names


def parse_hosts(hosts: str | Iterable[str]) -> list[x509.GeneralName]:
    """Subject alternative names from host names and IP addresses (a comma-separated string or a list).

    An entry that parses as an IPv4/IPv6 address becomes an IP SAN, anything else must be a DNS
    name (letters, digits, hyphens, dots; a leading ``*.`` wildcard is allowed).
    """
    items = [h.strip() for h in (hosts.split(",") if isinstance(hosts, str) else hosts)]
    items = [h for h in items if h]
    if not items:
        raise PKIError("--hosts: give at least one host name or IP address")
    names: list[x509.GeneralName] = []
    for h in items:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
            continue
        except ValueError:
            pass
        labels = h[2:].split(".") if h.startswith("*.") else h.split(".")
        if len(h) > 253 or not all(_DNS_LABEL.match(lab) for lab in labels):
            raise PKIError(f"--hosts: {h!r} is neither an IP address nor a valid DNS name")
        names.append(x509.DNSName(h.lower()))
    if len({str(n.value) for n in names}) != len(names):
        raise PKIError(f"--hosts: duplicate entries in {', '.join(items)}")
    return names


# --------------------------------------------------------------------------- generation


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _validity(builder: x509.CertificateBuilder, days: int) -> x509.CertificateBuilder:
    if not 1 <= days <= 3650:
        raise PKIError(f"--days: expected 1 to 3650, got {days}")
    start = _now() - dt.timedelta(minutes=5)  # tolerate small clock differences between hosts
    return builder.not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))


def make_ca(common_name: str = "fedmoe deployment CA",
            days: int = DEFAULT_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate (may sign server certificates only: path length 0) and its key."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(ski, critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False))
    return _validity(builder, days).sign(key, hashes.SHA384()), key


def make_server_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
                     hosts: str | Iterable[str] = DEFAULT_HOSTS, days: int = DEFAULT_DAYS
                     ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The SuperLink's TLS certificate for ``hosts`` (its SANs; the first is also the CN), signed by the CA."""
    sans = parse_hosts(hosts)
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(sans[0].value))])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .add_extension(x509.SubjectAlternativeName(sans), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False))
    return _validity(builder, days).sign(ca_key, hashes.SHA384()), key


def make_supernode_key(comment: str = "fedmoe-supernode", curve: str = "p384") -> tuple[bytes, bytes]:
    """``(private, public)`` of one SuperNode authentication key, both in OpenSSH format.

    The private key is unencrypted (``-----BEGIN OPENSSH PRIVATE KEY-----``; ``flower-supernode``
    reads it without a passphrase); the public key is one line ``ecdsa-sha2-nistpNNN AAAA… comment``.
    """
    if curve not in CURVES:
        raise PKIError(f"curve: expected one of {', '.join(CURVES)}, got {curve!r}")
    if any(c.isspace() for c in comment):
        raise PKIError(f"key comment must not contain spaces: {comment!r}")
    key = ec.generate_private_key(CURVES[curve]())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + f" {comment}\n".encode()


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Output:
    """One file to write: name relative to the output folder, content, whether it is secret (0600)."""

    name: str
    content: bytes
    secret: bool = False


def write_outputs(out: Path, outputs: Sequence[Output], force: bool = False, private: bool = False) -> list[Path]:
    """Write every output under ``out``; refuse (writing nothing) if one exists and not ``force``.

    The folder ``out`` is made (or set) mode 0700: it holds private keys. Secret outputs are
    0600; the others follow the umask unless ``private``, which makes every file 0600 (a
    deployment on one machine, where nobody but this user needs even the certificates).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PKIError(f"{out}: exists and is not a folder")
    targets = [out / o.name for o in outputs]
    if not force:
        existing = [str(p) for p in targets if p.exists() or p.is_symlink()]
        if existing:
            more = f" (and {len(existing) - 1} more of the files to write)" if len(existing) > 1 else ""
            raise PKIError(f"{existing[0]} already exists{more}; nothing written, use --force to overwrite")
    for p in targets:
        if p.is_dir():
            raise PKIError(f"{p}: is a folder")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for o, p in zip(outputs, targets):
        write_atomic(p, o.content, o.secret or private)
    return targets


def deployment_outputs(hosts: str | Iterable[str] = DEFAULT_HOSTS, nodes: int = 0, days: int = DEFAULT_DAYS,
                       curve: str = "p384") -> list[Output]:
    """CA, server certificate and ``nodes`` SuperNode key pairs, in memory."""
    if not 0 <= nodes <= 10_000:
        raise PKIError(f"--nodes: expected 0 to 10000, got {nodes}")
    ca_cert, ca_key = make_ca(days=days)
    cert, key = make_server_cert(ca_cert, ca_key, hosts, days)
    outputs = [Output(CA_CERT, _pem_cert(ca_cert)), Output(CA_KEY, _pem_key(ca_key), secret=True),
               Output(SERVER_CERT, _pem_cert(cert)), Output(SERVER_KEY, _pem_key(key), secret=True)]
    for k in range(nodes):
        private, public = make_supernode_key(f"supernode-{k}", curve)
        priv_name, pub_name = supernode_key_names(k)
        outputs += [Output(priv_name, private, secret=True), Output(pub_name, public)]
    return outputs


def write_deployment_pki(out: Path, hosts: str | Iterable[str] = DEFAULT_HOSTS, nodes: int = 0,
                         days: int = DEFAULT_DAYS, force: bool = False, curve: str = "p384",
                         private: bool = False) -> list[Path]:
    """Generate and write the CA, the server certificate and ``nodes`` SuperNode key pairs into ``out``
    (a 0700 folder; ``private``: every file 0600, :func:`write_outputs`)."""
    return write_outputs(Path(out), deployment_outputs(hosts, nodes, days, curve), force, private)


def write_supernode_key(private_path: Path, force: bool = False, comment: str | None = None,
                        curve: str = "p384") -> tuple[Path, Path]:
    """One SuperNode key pair: ``private_path`` and ``private_path`` with suffix ``.pub``."""
    private_path = Path(private_path)
    if private_path.suffix == ".pub":
        raise PKIError(f"{private_path}: give the private key's path; the public key goes next to it as .pub")
    private, public = make_supernode_key(comment or re.sub(r"\s", "_", private_path.stem) or "supernode", curve)
    pub_name = private_path.with_suffix(".pub").name if private_path.suffix else private_path.name + ".pub"
    a, b = write_outputs(private_path.parent, [Output(private_path.name, private, secret=True),
                                               Output(pub_name, public)], force)
    return a, b
