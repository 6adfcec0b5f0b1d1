"""A tiny real Linux guest for libvirt: Debian's kernel and a busybox initramfs built here.

The guest boots by direct kernel boot under QEMU TCG, loads virtio-net, and runs
busybox `udhcpc` on eth0: the DHCP answer it gets configures eth0 (address, mask,
router, MTU) and is printed on the serial console as one line starting with
`LEASE_MARKER`, which the tests read from the console file. It then answers ping.

The initramfs is cached under var/guest/ by a hash of its inputs (the kernel
release, busybox, the init script), so only the first run builds it (~1 s).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "var" / "guest"
BUSYBOX = Path("/bin/busybox")
LEASE_MARKER = "OVSF-LEASE"
# In load order: virtio-net and what it depends on (as plain .ko files in Debian 12).
MODULES = (
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
)

_INIT = """#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/modules/$m; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /udhcpc.script -O mtu -b -t 60 -T 1 -A 1
exec sleep 1000000
"""

# The start of a udhcpc script: on a lease, eth0 configured as a guest's init does
# (address, MTU, default route); every other event ignored. No braces (str.format).
UDHCPC_CONFIGURE = """#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr flush dev "$interface"
ip addr add "$ip/$mask" dev "$interface"
[ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
[ -n "$router" ] && ip route replace default via "$router" dev "$interface"
"""

_UDHCPC_SCRIPT = UDHCPC_CONFIGURE + """\
echo "{marker} mac=$(cat /sys/class/net/$interface/address) ip=$ip mask=$mask \
router=$router mtu=$mtu serverid=$serverid" > /dev/console
"""


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path


def _kernel() -> tuple[Path, str]:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise RuntimeError("no /boot/vmlinuz-*: install linux-image-amd64 (.ci/fabric does)")
    kernel = kernels[-1]
    return kernel, kernel.name.removeprefix("vmlinuz-")


def _cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (path, mode, data) entries (symlinks: data is the target)."""
    out = io.BytesIO()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        out.write(b"070701" + b"".join(f"{v:08X}".encode() for v in fields) + encoded)
        out.write(b"\0" * (-(110 + len(encoded)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
    return out.getvalue()


def build_guest_image() -> GuestImage:
    """The kernel and the (cached) initramfs of the test guest."""
    kernel, release = _kernel()
    modules_dir = Path("/lib/modules") / release / "kernel"
    init = _INIT.format(modules=" ".join(Path(m).name for m in MODULES))
    script = _UDHCPC_SCRIPT.format(marker=LEASE_MARKER)
    busybox = BUSYBOX.read_bytes()
    key = hashlib.sha256()
    for part in (release.encode(), busybox, init.encode(), script.encode()):
        key.update(hashlib.sha256(part).digest())
    directory = CACHE / key.hexdigest()[:16]
    initrd = directory / "initrd.gz"
    if not initrd.exists():
        applets = subprocess.run(
            [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        entries: list[tuple[str, int, bytes]] = [
            (d, 0o40755, b"") for d in ("bin", "dev", "proc", "sys", "lib", "lib/modules")
        ]
        entries.append(("bin/busybox", 0o100755, busybox))
        entries += [(f"bin/{a}", 0o120777, b"busybox") for a in applets if a != "busybox"]
        entries.append(("init", 0o100755, init.encode()))
        entries.append(("udhcpc.script", 0o100755, script.encode()))
        entries += [
            (f"lib/modules/{Path(m).name}", 0o100644, (modules_dir / m).read_bytes())
            for m in MODULES
        ]
        directory.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: a concurrent run never reads half a file.
        fd, tmp = tempfile.mkstemp(dir=directory)
        with os.fdopen(fd, "wb") as out:
            out.write(gzip.compress(_cpio_newc(entries), compresslevel=6))
        os.replace(tmp, initrd)
    local_kernel = directory / "vmlinuz"
    if not local_kernel.exists():
        fd, tmp = tempfile.mkstemp(dir=directory)
        os.close(fd)
        shutil.copyfile(kernel, tmp)
        os.replace(tmp, local_kernel)
    return GuestImage(kernel=local_kernel, initrd=initrd)


def guest_domain_xml(
    name: str, image: GuestImage, *, mac: str, tap: str, console: Path, metadata: str = ""
) -> str:
    """A direct-kernel-boot TCG domain with one virtio NIC on a tap libvirt creates and
    attaches nowhere (the service plugs it), its serial console written to `console`."""
    return (
        "<domain type='qemu'>"
        f"<name>{escape(name)}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type>"
        f"<kernel>{escape(str(image.kernel))}</kernel><initrd>{escape(str(image.initrd))}</initrd>"
        "<cmdline>console=ttyS0 quiet panic=-1</cmdline></os>"
        "<features><acpi/></features>"
        f"<metadata>{metadata}</metadata>"
        "<on_poweroff>destroy</on_poweroff><on_crash>destroy</on_crash>"
        "<devices>"
        f"<interface type='ethernet'><mac address={quoteattr(mac)}/>"
        f"<target dev={quoteattr(tap)} managed='yes'/><model type='virtio'/></interface>"
        f"<serial type='file'><source path={quoteattr(str(console))}/><target port='0'/></serial>"
        "<memballoon model='none'/>"
        "</devices></domain>"
    )


_LEASE_RE = re.compile(LEASE_MARKER + r" (.*)")


def wait_for_lease(console: Path, *, timeout: float = 90.0) -> dict[str, str]:
    """The fields of the last lease line the guest printed, once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        text = console.read_text(errors="replace") if console.exists() else ""
        found = _LEASE_RE.findall(text)
        if found:
            return dict(item.split("=", 1) for item in found[-1].split() if "=" in item)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no DHCP lease on the guest's console after {timeout}s:\n{text}")
        time.sleep(0.2)
