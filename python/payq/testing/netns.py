"""Stand-in hosts for tests: Linux network namespaces, each joined to the
root namespace by a veth pair with private addresses, and (for programs
started through it) a hostname of its own.

::

    with network_hosts(["host-a", "host-b"]) as (a, b):
        server listens on a.gateway and b.gateway   # addresses in the root namespace
        subprocess.Popen(a.command(["python", "-m", "payq", "--dsn", f"host={a.gateway} ...", "worker", ...]))
        a.kill_all()                                # every process of host a, as if it lost power

A host reaches the root namespace only over its own link (``a.address``
to ``a.gateway``, a /30 of ``10.231.0.0/16``), so its traffic is real TCP
over a network device that a test can take down. Needs root and ``ip``
(iproute2); :func:`unavailable_reason` says why not, for a skip.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

__all__ = ["Host", "network_hosts", "unavailable_reason"]

# Namespaces are named payq-<pid of the creating process>-<index>, so a run
# recognises (and removes) what an earlier run that was killed left behind.
_NAME_PREFIX = "payq-"
_NAME_PATTERN = re.compile(r"^payq-(\d+)-(\d+)$")
_NETWORK = ipaddress.IPv4Network("10.231.0.0/16")
_SUBNET_PREFIX_LENGTH = 30
_HOST_COUNT_MAX = 16
_COMMAND_TIMEOUT_S = 10.0
_LOCK_PATH = "/tmp/payq-netns.lock"
# Runs a program with the hostname given first: the program replaces this
# interpreter (exec), so its pid is the pid the caller started.
_WITH_HOSTNAME = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"
# Removes the hosts named in its arguments (namespace, link, namespace,
# link, ...) once its stdin reaches end of file: when the process that made
# them exits, however it exits. Processes still on a host were started on
# it by that process's test, and would otherwise retry a gone server for ever.
_WATCHDOG = """
import os, signal, subprocess, sys
sys.stdin.buffer.read()
names = sys.argv[1:]
for namespace, link in zip(names[0::2], names[1::2]):
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=10).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=10)
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
"""


def _ip(*args: str, check: bool = True) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=check)


@dataclass(frozen=True)
class Host:
    """One stand-in host: a network namespace with one link to the root
    namespace."""

    namespace: str
    hostname: str
    address: str       # this host's address, inside its namespace
    gateway: str       # the root namespace's end of the link: where a server there listens
    network: str       # the /30 both ends share, for pg_hba.conf and the like
    link: str          # the root namespace's end of the veth pair
    inner_link: str    # the host's end

    def command(self, argv: Sequence[str]) -> List[str]:
        """``argv`` run on this host: in its network namespace, with its
        hostname (a UTS namespace of its own). The program execs in place,
        so the pid of the process started with this command is its pid."""
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "--",
                sys.executable, "-c", _WITH_HOSTNAME, self.hostname, *argv]

    def pids(self) -> List[int]:
        """Every process running in this host's network namespace."""
        out = _ip("netns", "pids", self.namespace).stdout
        return sorted(int(word) for word in out.split())

    def kill_all(self, signum: int = signal.SIGKILL) -> List[int]:
        """Send ``signum`` to every process of this host; returns their pids."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        return pids

    def link_set(self, up: bool) -> None:
        """Connect or cut this host's link (a network partition of the host)."""
        _ip("link", "set", self.link, "up" if up else "down")


def unavailable_reason() -> Optional[str]:
    """Why network namespaces cannot be made here, or None if they can."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    probe = f"{_NAME_PREFIX}{os.getpid()}-probe"
    try:
        made = _ip("netns", "add", probe, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"ip netns is unavailable: {exc}"
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    unshared = subprocess.run(["unshare", "--uts", "--", "true"], capture_output=True, text=True,
                              timeout=_COMMAND_TIMEOUT_S, check=False)
    if unshared.returncode != 0:
        return f"unshare --uts failed: {unshared.stderr.strip()}"
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers_remove() -> None:
    """Remove namespaces (and so their links) of runs whose process is
    gone. Processes still inside one are left alone: they are not ours."""
    for line in _ip("netns", "list").stdout.splitlines():
        words = line.split()
        match = _NAME_PATTERN.match(words[0]) if words else None
        if match and not _process_alive(int(match.group(1))):
            _ip("netns", "del", words[0], check=False)


def _free_subnets(count: int) -> List[ipaddress.IPv4Network]:
    """``count`` /30s of 10.231.0.0/16 that no address in the root
    namespace uses yet."""
    taken = set()
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        match = re.search(r"inet (\S+)", line)
        if match:
            taken.add(ipaddress.ip_interface(match.group(1)).network)
    free: List[ipaddress.IPv4Network] = []
    for subnet in _NETWORK.subnets(new_prefix=_SUBNET_PREFIX_LENGTH):
        if not any(subnet.overlaps(t) for t in taken):
            free.append(subnet)
            if len(free) == count:
                return free
    raise RuntimeError(f"no {count} free /{_SUBNET_PREFIX_LENGTH} subnets left in {_NETWORK}")


def _host_named(index: int, hostname: str, subnet: ipaddress.IPv4Network) -> Host:
    gateway, address = list(subnet.hosts())[:2]
    pid = os.getpid()
    return Host(namespace=f"{_NAME_PREFIX}{pid}-{index}", hostname=hostname, address=str(address),
                gateway=str(gateway), network=str(subnet), link=f"pq{pid}r{index}", inner_link=f"pq{pid}h{index}")


def _watchdog_start(hosts: Sequence[Host]) -> "subprocess.Popen[bytes]":
    names = [name for host in hosts for name in (host.namespace, host.link)]
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, *names], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _watchdog_stop(watchdog: "subprocess.Popen[bytes]") -> None:
    """The hosts are gone already: let the watchdog look once more and end."""
    assert watchdog.stdin is not None
    watchdog.stdin.close()
    try:
        watchdog.wait(timeout=_COMMAND_TIMEOUT_S * 2)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait(timeout=_COMMAND_TIMEOUT_S)


def _host_create(host: Host) -> None:
    prefix_length = ipaddress.ip_network(host.network).prefixlen
    _ip("netns", "add", host.namespace)
    _ip("link", "add", host.link, "type", "veth", "peer", "name", host.inner_link, "netns", host.namespace)
    _ip("addr", "add", f"{host.gateway}/{prefix_length}", "dev", host.link)
    _ip("link", "set", host.link, "up")
    _ip("-n", host.namespace, "addr", "add", f"{host.address}/{prefix_length}", "dev", host.inner_link)
    _ip("-n", host.namespace, "link", "set", host.inner_link, "up")
    _ip("-n", host.namespace, "link", "set", "lo", "up")


def _host_remove(host: Host) -> None:
    # Processes still running on the host were started by this test: end
    # them, or the namespace (and the link) outlives its name.
    try:
        host.kill_all()
    except subprocess.SubprocessError:
        pass
    _ip("link", "del", host.link, check=False)
    _ip("netns", "del", host.namespace, check=False)


@contextmanager
def network_hosts(hostnames: Sequence[str]) -> Iterator[List[Host]]:
    """Make one stand-in host per name; remove them all afterwards, also
    after a failure, and (through a watchdog process) when the calling
    process is killed."""
    if not 1 <= len(hostnames) <= _HOST_COUNT_MAX:
        raise ValueError(f"between 1 and {_HOST_COUNT_MAX} hosts")
    with ExitStack() as cleanup:
        # Concurrent runs must not pick the same subnets.
        with open(_LOCK_PATH, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _leftovers_remove()
            subnets = _free_subnets(len(hostnames))
            hosts = [_host_named(index, hostname, subnet)
                     for index, (hostname, subnet) in enumerate(zip(hostnames, subnets))]
            cleanup.callback(_watchdog_stop, _watchdog_start(hosts))
            for host in hosts:
                cleanup.callback(_host_remove, host)
                _host_create(host)
        yield hosts
