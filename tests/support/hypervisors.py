"""A libvirtd per simulated host: each runs inside its host's network namespace, in a
mount and UTS namespace of its own, so every lab host is a hypervisor with its own
OVS, taps, QEMU processes, libvirt state and host identity (live migration between
two of them is refused as "the same host" otherwise).

Inside its mount namespace the daemon sees its own /run/libvirt, /var/lib/libvirt,
/etc/libvirt/qemu (domain definitions) and qemu.conf (QEMU as root: /dev/kvm is
root-only here, TCG anyway; console to files instead of virtlogd). Its socket is
a plain file in the host's run directory, reached from the root namespace by
`qemu+unix:///system?socket=...`. The daemon's executable is a symlink named
`ovsf-libvirtd` so that other fixtures looking for a system `libvirtd` do not
take it for theirs.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import uuid
from collections.abc import Iterator

from lab.hosts import SimHost
from lab.netns import in_netns, poll_until, read_pidfile, stop_processes
from tests.support.libvirt_env import QEMU_CONF

DAEMON_WAIT_S = 60.0
_MOUNTS = ("run", "lib", "etc-qemu")


class Hypervisor:
    """libvirtd in the namespace of `host`; start() / stop()."""

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.dir = host.rundir / "libvirt"
        self.pidfile = self.dir / "libvirtd.pid"
        self.socket = self.dir / "run" / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"

    def start(self) -> None:
        for name in _MOUNTS:
            (self.dir / name).mkdir(parents=True, exist_ok=True)
        original = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
        (self.dir / "qemu.conf").write_text(
            original + '\nuser = "root"\ngroup = "root"\nstdio_handler = "file"\n'
        )
        (self.dir / "libvirtd.conf").write_text(f'host_uuid = "{uuid.uuid4()}"\n')
        daemon = self.dir / "ovsf-libvirtd"
        daemon.unlink(missing_ok=True)
        daemon.symlink_to("/usr/sbin/libvirtd")
        q = shlex.quote
        script = " && ".join(
            [
                f"hostname {q(self.host.name)}",
                "mkdir -p /run/libvirt /var/lib/libvirt /etc/libvirt/qemu",
                f"mount --bind {q(str(self.dir / 'run'))} /run/libvirt",
                f"mount --bind {q(str(self.dir / 'lib'))} /var/lib/libvirt",
                f"mount --bind {q(str(self.dir / 'etc-qemu'))} /etc/libvirt/qemu",
                f"mount --bind {q(str(self.dir / 'qemu.conf'))} {QEMU_CONF}",
                f"exec {q(str(daemon))} -d -f {q(str(self.dir / 'libvirtd.conf'))} "
                f"-p {q(str(self.pidfile))}",
            ]
        )
        subprocess.run(
            in_netns(
                self.host.netns,
                ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script],
            ),
            check=True,
            capture_output=True,
            timeout=DAEMON_WAIT_S,
        )
        poll_until(self.answers, timeout=DAEMON_WAIT_S, what=f"libvirtd of {self.host.name}")

    def answers(self) -> bool:
        return (
            subprocess.run(
                ["virsh", "-c", self.uri, "version"], capture_output=True, timeout=30
            ).returncode
            == 0
        )

    def virsh(self, *args: str, timeout: float = 120) -> str:
        return subprocess.run(
            ["virsh", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        ).stdout

    def domains(self) -> list[str]:
        return self.virsh("list", "--all", "--name").split()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            for name in self.domains():
                subprocess.run(["virsh", "-c", self.uri, "destroy", name], capture_output=True)
                subprocess.run(["virsh", "-c", self.uri, "undefine", name], capture_output=True)
        pid = read_pidfile(self.pidfile)
        if pid is not None:
            stop_processes([pid], grace=15)
        self.pidfile.unlink(missing_ok=True)


@contextlib.contextmanager
def hypervisors(*hosts: SimHost) -> Iterator[list[Hypervisor]]:
    started: list[Hypervisor] = []
    try:
        for host in hosts:
            hypervisor = Hypervisor(host)
            started.append(hypervisor)
            hypervisor.start()
        yield started
    finally:
        for hypervisor in reversed(started):
            hypervisor.stop()
