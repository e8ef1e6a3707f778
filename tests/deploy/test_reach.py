"""fedmoe.deploy.reach and ``fedmoe deploy check``: the certificate's names against the address the
SuperNodes dial, offline and over a real TLS handshake with a server on 127.0.0.1 (a thread of this
process presenting certificates made by fedmoe.deploy.pki). A second or so."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from fedmoe.cli import main as cli
from fedmoe.deploy.pki import write_deployment_pki
from fedmoe.deploy.processes import free_port
from fedmoe.deploy.reach import ReachError, check_certificate_names, check_superlink, split_address


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Three deployments' files: one for 127.0.0.1, one for another address, one from another CA."""
    root = tmp_path_factory.mktemp("reach")
    write_deployment_pki(root / "right", ["localhost", "127.0.0.1"])
    write_deployment_pki(root / "wrong", ["10.231.0.99", "superlink.example.org"])
    write_deployment_pki(root / "other", ["127.0.0.1"])
    return root


class TLSServer:
    """Accepts TLS connections on 127.0.0.1 with the given certificate until closed."""

    def __init__(self, folder) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(folder / "server.pem", folder / "server.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5)
            try:
                self.ctx.wrap_socket(conn, server_side=True).close()
            except OSError:
                conn.close()

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def serve():
    servers = []

    def start(folder):
        servers.append(TLSServer(folder))
        return servers[-1].address

    yield start
    for s in servers:
        s.close()


def test_addresses_are_split_or_refused():
    assert split_address("10.231.0.1:9092") == ("10.231.0.1", 9092)
    assert split_address("[::1]:9092") == ("::1", 9092)
    for bad in ("10.231.0.1", ":9092", "h:0", "h:x"):
        with pytest.raises(ReachError, match="expected HOST:PORT"):
            split_address(bad)


def test_the_certificate_file_must_name_the_dialled_host(pki):
    check_certificate_names(pki / "right" / "server.pem", "127.0.0.1:9092")
    check_certificate_names(pki / "right" / "server.pem", "LOCALHOST:9092")
    check_certificate_names(pki / "wrong" / "server.pem", "superlink.example.org:9092")
    with pytest.raises(ReachError) as err:
        check_certificate_names(pki / "wrong" / "server.pem", "10.231.0.1:9092")
    assert str(err.value) == (f"{pki / 'wrong' / 'server.pem'}: the certificate names superlink.example.org, "
                              "10.231.0.99, not 10.231.0.1, the address the SuperNodes dial (10.231.0.1:9092); "
                              "make it with --hosts 10.231.0.1")
    with pytest.raises(ReachError, match="not 127.0.0.2"):
        check_certificate_names(pki / "right" / "server.pem", "127.0.0.2:1")
    with pytest.raises(ReachError, match="not example.org"):
        check_certificate_names(pki / "wrong" / "server.pem", "example.org:1")
    with pytest.raises(ReachError, match="not a readable PEM certificate"):
        check_certificate_names(pki / "right" / "ca.key", "127.0.0.1:1")


def test_a_tls_handshake_verifies_the_ca_and_the_host(pki, serve):
    address = serve(pki / "right")
    assert check_superlink(address, pki / "right" / "ca.crt", timeout=10) == "localhost, 127.0.0.1"
    wrong = serve(pki / "wrong")  # signed by its own CA for another address
    with pytest.raises(ReachError, match=f"^SuperLink {wrong}: its certificate does not name 127.0.0.1 "):
        check_superlink(wrong, pki / "wrong" / "ca.crt", timeout=10)
    with pytest.raises(ReachError, match=f"^SuperLink {address}: certificate not trusted with "):
        check_superlink(address, pki / "other" / "ca.crt", timeout=10)


def test_nobody_listening_and_nobody_answering_are_one_line_each(pki):
    port = free_port()
    with pytest.raises(ReachError, match=f"^SuperLink 127.0.0.1:{port}: nothing listens there"):
        check_superlink(f"127.0.0.1:{port}", pki / "right" / "ca.crt", timeout=5)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts TCP, never answers the handshake
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(ReachError, match=f"^SuperLink {address}: no answer within 0.5 s$"):
            check_superlink(address, pki / "right" / "ca.crt", timeout=0.5)


def test_cli_deploy_check(pki, serve, capsys):
    address = serve(pki / "right")
    assert cli(["deploy", "check", "--superlink", address, "--ca", str(pki / "right" / "ca.crt")]) == 0
    assert capsys.readouterr().out.strip() == f"SuperLink {address}: TLS verified, certificate names localhost, " \
                                              "127.0.0.1"
    wrong = serve(pki / "wrong")
    assert cli(["deploy", "check", "--superlink", wrong, "--ca", str(pki / "wrong" / "ca.crt")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"fedmoe: error: SuperLink {wrong}: its certificate "
                                                         "does not name 127.0.0.1")
