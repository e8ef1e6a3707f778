"""Before SuperNodes and ``flwr`` dial a SuperLink: does its certificate name the address they
dial, and does anything answer there with that certificate? One line naming what and where
if not, instead of a SuperNode retrying for ever or a TLS error deep in a log.

* :func:`check_certificate_names` reads the server certificate file (offline, before anything starts);
* :func:`check_superlink` makes a TLS connection to ``HOST:PORT`` with the CA and Python's own hostname
  check (the check gRPC makes): nothing listening, no answer in time, a certificate the CA did not sign
  and a certificate that does not name ``HOST`` each give their own one-line :class:`ReachError`.

``fedmoe deploy check --superlink HOST:PORT --ca ca.crt`` runs the second check and prints one line (exit 1 on
failure): run it on a SuperNode host or the operator's machine before starting SuperNodes or ``flwr run``.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path

from cryptography import x509


class ReachError(RuntimeError):
    """The SuperLink cannot be reached, or its certificate does not fit the address (one-line message)."""


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[v6]:PORT`` for IPv6); :class:`ReachError` if malformed."""
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReachError(f"{address!r}: expected HOST:PORT of the SuperLink")
    return host, int(port)


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses in the certificate's subject alternative names."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in sans.get_values_for_type(x509.DNSName) + sans.get_values_for_type(x509.IPAddress)]


def _names_host(names: list[str], host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
        return any(_same_ip(n, ip) for n in names)
    except ValueError:
        host = host.lower().rstrip(".")
        return any(n.lower() == host or (n.startswith("*.") and host.split(".", 1)[-1] == n[2:].lower()
                                         and "." in host) for n in names)


def _same_ip(name: str, ip: ipaddress._BaseAddress) -> bool:
    try:
        return ipaddress.ip_address(name) == ip
    except ValueError:
        return False


def check_certificate_names(cert_file: Path, address: str) -> None:
    """:class:`ReachError` unless the certificate in ``cert_file`` names the host of ``address``."""
    host, _ = split_address(address)
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as err:
        raise ReachError(f"{cert_file}: not a readable PEM certificate ({err})") from None
    names = certificate_names(cert)
    if not _names_host(names, host):
        raise ReachError(f"{cert_file}: the certificate names {', '.join(names) or 'nothing'}, not {host}, the "
                         f"address the SuperNodes dial ({address}); make it with --hosts {host}")


def check_superlink(address: str, ca_cert: Path, timeout: float = 10.0) -> str:
    """A TLS handshake with the SuperLink at ``address``, verified with ``ca_cert`` and the host name;
    the certificate's names on success, else a one-line :class:`ReachError` saying what failed where."""
    host, port = split_address(address)
    try:
        context = ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError) as err:
        raise ReachError(f"{ca_cert}: not a readable CA certificate ({err})") from None
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as err:
        if err.verify_code == 62 or "mismatch" in str(err.verify_message):  # X509_V_ERR_HOSTNAME_MISMATCH
            raise ReachError(f"SuperLink {address}: its certificate does not name {host} "
                             f"({err.verify_message}); remake it with --hosts {host}") from None
        raise ReachError(f"SuperLink {address}: certificate not trusted with {ca_cert} "
                         f"({err.verify_message})") from None
    except (TimeoutError, socket.timeout):
        raise ReachError(f"SuperLink {address}: no answer within {timeout:g} s") from None
    except ConnectionRefusedError:
        raise ReachError(f"SuperLink {address}: nothing listens there (connection refused)") from None
    except OSError as err:
        raise ReachError(f"SuperLink {address}: unreachable ({err.strerror or err})") from None
    return ", ".join(certificate_names(x509.load_der_x509_certificate(der)))
