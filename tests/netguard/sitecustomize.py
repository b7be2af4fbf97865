"""Loaded at start-up by every Python process the tests run (their PYTHONPATH includes this folder).

It refuses, before anything is sent, any TCP/UDP connection to an address off this machine, and
records it in $GAND_NETGUARD_LOG; the test session fails if that file is not empty. So "no network
access is attempted in the tests" is checked for the CLI and worker processes too, not hoped.
$GAND_NETGUARD_ALLOW names networks (CIDR, comma-separated) that a test built itself, such as the
addresses of the network namespaces of tests/test_multihost.py: those count as this machine.
"""
import ipaddress
import os
import socket

_LOG = os.environ.get("GAND_NETGUARD_LOG")
_ALLOW = [ipaddress.ip_network(n.strip()) for n in os.environ.get("GAND_NETGUARD_ALLOW", "").split(",")
          if n.strip()]
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _is_local(address) -> bool:
    host = address[0] if isinstance(address, tuple) else None
    if not isinstance(host, str):
        return True
    if host == "localhost" or host.startswith("127.") or host in ("::1", "0.0.0.0", "::"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(ip in net for net in _ALLOW)


def _refuse_remote(sock: socket.socket, address) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address):
        with open(_LOG, "a") as f:
            f.write(f"pid {os.getpid()} tried to reach {address!r}\n")
        raise OSError(f"network access refused in gand's tests: {address!r}")


def _guarded_connect(self, address):
    _refuse_remote(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _refuse_remote(self, address)
    return _connect_ex(self, address)


if _LOG:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
