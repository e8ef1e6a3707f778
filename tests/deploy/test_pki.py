"""Certificates and keys of fedmoe.deploy.pki: the server certificate verifies against the CA (also in a
real TLS handshake), its SANs are the hosts asked for, SuperNode keys load as OpenSSH ECDSA, and files
are never overwritten without force."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key, load_ssh_public_key

from fedmoe.cli import main as cli
from fedmoe.deploy.pki import (
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    PKIError,
    parse_hosts,
    supernode_key_names,
    write_deployment_pki,
    write_supernode_key,
)
from fedmoe.files import current_umask


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki")
    write_deployment_pki(out, "localhost,127.0.0.1,superlink.example.org,10.0.0.7", nodes=2)
    return out


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_certificate_is_signed_by_the_ca_and_names_the_hosts(pki):
    ca, server = _cert(pki / CA_CERT), _cert(pki / SERVER_CERT)
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "superlink.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"),
                                                       ipaddress.ip_address("10.0.0.7")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    key = load_pem_private_key((pki / SERVER_KEY).read_bytes(), None)
    assert key.public_key().public_numbers() == server.public_key().public_numbers()


def test_default_hosts_are_localhost_and_the_loopback_address(tmp_path):
    write_deployment_pki(tmp_path)
    san = _cert(tmp_path / SERVER_CERT).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert not list(tmp_path.glob("supernode-*"))


@pytest.mark.parametrize("server_name", ["localhost", "127.0.0.1"])
def test_tls_handshake_with_only_the_ca_as_trust_anchor(pki, server_name):
    """Python's ssl (which the SuperNode's HTTP client uses) accepts the chain and checks the host name."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / SERVER_CERT, pki / SERVER_KEY)
    client_ctx = ssl.create_default_context(cafile=str(pki / CA_CERT))  # check_hostname, CERT_REQUIRED
    a, b = socket.socketpair()
    errors = []

    def serve():
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.sendall(s.recv(4))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    t = threading.Thread(target=serve)
    t.start()
    with client_ctx.wrap_socket(b, server_hostname=server_name) as c:
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"
    t.join(10)
    assert not errors


def test_a_host_not_in_the_certificate_fails_the_handshake(pki):
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki / SERVER_CERT, pki / SERVER_KEY)
    client_ctx = ssl.create_default_context(cafile=str(pki / CA_CERT))
    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: pytest.raises(Exception, server_ctx.wrap_socket, a, server_side=True))
    t.start()
    with pytest.raises(ssl.SSLCertVerificationError):
        client_ctx.wrap_socket(b, server_hostname="other.example.org")
    b.close()
    t.join(10)
    a.close()


def test_supernode_keys_are_openssh_ecdsa_p384_and_private_keys_are_private(pki):
    for k in range(2):
        priv_name, pub_name = supernode_key_names(k)
        private_bytes = (pki / priv_name).read_bytes()
        assert private_bytes.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        private = load_ssh_private_key(private_bytes, password=None)
        assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp384r1"
        line = (pki / pub_name).read_text()
        assert line.startswith("ecdsa-sha2-nistp384 AAAA") and line.rstrip().endswith(f"supernode-{k}")
        public = load_ssh_public_key(line.encode())
        assert public.public_numbers() == private.public_key().public_numbers()
        assert stat.S_IMODE((pki / priv_name).stat().st_mode) == 0o600
    for name in (CA_KEY, SERVER_KEY):
        assert stat.S_IMODE((pki / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((pki / CA_CERT).stat().st_mode) == 0o666 & ~current_umask()  # public: the umask's mode
    assert stat.S_IMODE(pki.stat().st_mode) == 0o700  # the folder holds private keys
    assert (pki / supernode_key_names(0)[1]).read_bytes() != (pki / supernode_key_names(1)[1]).read_bytes()


def test_existing_files_are_not_overwritten_and_nothing_is_written(tmp_path):
    write_deployment_pki(tmp_path, nodes=1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / supernode_key_names(0)[0]).unlink()  # one file missing, the others present
    with pytest.raises(PKIError, match="already exists.*--force"):
        write_deployment_pki(tmp_path, nodes=1)
    assert not (tmp_path / supernode_key_names(0)[0]).exists()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {k: v for k, v in before.items()
                                                                      if k != supernode_key_names(0)[0]}
    write_deployment_pki(tmp_path, nodes=1, force=True)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(after) == set(before) and after[CA_CERT] != before[CA_CERT]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_single_node_key_next_to_its_public_key(tmp_path):
    private, public = write_supernode_key(tmp_path / "edge-7.key")
    assert public == tmp_path / "edge-7.pub" and public.read_text().rstrip().endswith(" edge-7")
    with pytest.raises(PKIError, match="already exists"):
        write_supernode_key(tmp_path / "edge-7.key")
    with pytest.raises(PKIError, match="private key"):
        write_supernode_key(tmp_path / "edge-8.pub")


@pytest.mark.parametrize("hosts, message", [
    ("", "at least one"),
    ("bad host", "neither an IP address nor a valid DNS name"),
    ("-bad.example", "neither an IP address"),
    ("localhost,localhost", "duplicate"),
])
def test_bad_hosts_are_named(hosts, message):
    with pytest.raises(PKIError, match=message):
        parse_hosts(hosts)


def test_hosts_accept_ipv6_and_wildcards():
    names = parse_hosts(["::1", "*.example.org"])
    assert [type(n).__name__ for n in names] == ["IPAddress", "DNSName"]


def test_cli_writes_refuses_and_forces_in_one_line(tmp_path, capsys):
    out = tmp_path / "pki"
    assert cli(["deploy", "certs", "--out", str(out), "--nodes", "3", "--hosts", "localhost,192.168.1.10"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY] + [n for k in range(3) for n in supernode_key_names(k)])
    capsys.readouterr()
    assert cli(["deploy", "certs", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--force" in err
    assert cli(["deploy", "certs", "--out", str(out), "--force"]) == 0
    for bad in (["--hosts", "a b"], ["--days", "0"], ["--nodes", "-1"]):
        capsys.readouterr()
        assert cli(["deploy", "certs", "--out", str(tmp_path / "other"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("fedmoe: error:")
        assert not (tmp_path / "other").exists()
