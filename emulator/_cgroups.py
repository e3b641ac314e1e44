"""The execution environment's resources: freeze/thaw, CPU and memory limits, kill, peak RSS.
Uses per-environment cgroup v1 groups where writable, SIGSTOP/SIGCONT and no limits otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from emulator import _protocol as p

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
GROUP_PREFIX: Final = "afterflush-emulator-"
CFS_PERIOD_US: Final = 100_000
MIN_QUOTA_US: Final = 1_000
FREEZE_WAIT_S: Final = 2.0
EMPTY_WAIT_S: Final = 3.0
POLL_S: Final = 0.001
PR_SET_PDEATHSIG: Final = 1


def cpu_quota_us(memory_mb: int) -> int:
    """The CFS quota per 100 ms period that Lambda's CPU share for memory_mb amounts to."""
    share = min(memory_mb / p.MB_PER_VCPU, float(p.MAX_VCPUS))
    return max(MIN_QUOTA_US, round(CFS_PERIOD_US * share))


@dataclass(frozen=True, kw_only=True)
class SandboxOptions:
    """What the environment asks for: freezing (and how), and limits for a memory size."""

    freeze: bool = True
    freezer: str = "auto"  # auto | cgroup | signal
    limits: bool = True
    memory_mb: int = 1769
    # Init gets burst CPU (p.INIT_BURST_VCPUS) as on Lambda; False keeps the memory's share.
    init_burst: bool = True


def _own_cgroup(controller: str) -> Path | None:
    """This process's group in the v1 hierarchy that holds controller, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            mount = CGROUP_ROOT / controller
            if (mount / "cgroup.procs").exists():
                return mount / parts[2].lstrip("/")
    return None


def _make_group(controller: str) -> Path | None:
    """A fresh, uniquely named group under ours for controller; None when not writable."""
    parent = _own_cgroup(controller)
    if parent is None:
        return None
    _remove_stale_groups(parent)
    group = parent / f"{GROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
    except OSError:
        return None
    return group


def _remove_stale_groups(parent: Path) -> None:
    """Ends what emulators that died without cleaning up left behind, and removes their groups.

    A frozen process cannot die, so a stale freezer group is thawed before its processes
    are killed; the group itself goes once the kernel has reaped them (here or next time).
    """
    with contextlib.suppress(OSError):
        for child in parent.glob(f"{GROUP_PREFIX}*"):
            pid_text = child.name[len(GROUP_PREFIX) :].split("-", 1)[0]
            if not pid_text.isdigit() or _alive_not_zombie(int(pid_text)):
                continue
            with contextlib.suppress(OSError):
                (child / "freezer.state").write_text("THAWED")
            _signal_all(_read_pids(child), signal.SIGKILL)
            with contextlib.suppress(OSError):
                child.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pids(group: Path) -> list[int]:
    try:
        text = (group / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:
            continue
        # The command name may contain spaces or parentheses: parse after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(roots: Iterable[int]) -> list[int]:
    """roots and all their living descendants (processes that re-parented away are lost)."""
    tree = _children_map()
    seen: list[int] = []
    stack = [r for r in roots if _alive(r)]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack.extend(tree.get(pid, []))
    return seen


def peak_rss_bytes(pids: Iterable[int]) -> int:
    """Sum of the processes' peak resident set sizes (VmHWM)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total


def _signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _load_prctl() -> Callable[[int, int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    fn = libc.prctl
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong]
    fn.restype = ctypes.c_int

    def prctl(option: int, arg: int) -> int:
        return int(fn(option, arg))

    return prctl


class Sandbox:
    """Freezes, limits and kills every process of one execution environment.

    Processes join the environment at spawn time (see ``spawn_hook``), so their children are in
    it too. With cgroups, membership is the groups; without, it is the tracked process trees.
    """

    def __init__(self, options: SandboxOptions) -> None:
        self._options = options
        self._groups: dict[str, Path] = {}
        self._roots: set[int] = set()
        self._stopped: list[int] = []
        self._frozen = False
        self._prctl = _load_prctl()
        self.freeze_mode = "off"
        self.limits_mode = "off"
        self.limits_note = "--no-limits"
        self._setup()

    # ---- set-up and description -------------------------------------------------------------

    def _setup(self) -> None:
        opts = self._options
        if opts.freeze:
            if opts.freezer in ("auto", "cgroup"):
                group = _make_group("freezer")
                if group is not None:
                    self._groups["freezer"] = group
                    self.freeze_mode = "cgroup"
                elif opts.freezer == "cgroup":
                    raise OSError("the cgroup freezer is not writable (run as root, or --freezer signal)")
            if self.freeze_mode == "off":
                self.freeze_mode = "signal"
        if not opts.limits:
            return
        cpu = _make_group("cpu")
        memory = _make_group("memory")
        if cpu is None or memory is None:
            for group in (cpu, memory):
                if group is not None:
                    with contextlib.suppress(OSError):
                        group.rmdir()
            self.limits_note = "cgroup cpu/memory controllers not writable"
            return
        self._groups["cpu"] = cpu
        self._groups["memory"] = memory
        (cpu / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(cpu_quota_us(opts.memory_mb)))
        limit = opts.memory_mb * 1024 * 1024
        (memory / "memory.limit_in_bytes").write_text(str(limit))
        # Without this the environment could swap instead of being killed at its limit.
        with contextlib.suppress(OSError):
            (memory / "memory.memsw.limit_in_bytes").write_text(str(limit))
        self.limits_mode = "cgroup"
        self.limits_note = ""

    def cpu_burst(self, on: bool) -> None:
        """Init's burst CPU on, or back to the memory size's share for invocations."""
        cpu = self._groups.get("cpu")
        if cpu is None or not self._options.init_burst:
            return
        quota = CFS_PERIOD_US * p.INIT_BURST_VCPUS if on else cpu_quota_us(self._options.memory_mb)
        with contextlib.suppress(OSError):
            (cpu / "cpu.cfs_quota_us").write_text(str(max(quota, cpu_quota_us(self._options.memory_mb))))

    def describe(self) -> str:
        """The freeze and limits part of the start-up line."""
        if self.limits_mode == "cgroup":
            vcpu = cpu_quota_us(self._options.memory_mb) / CFS_PERIOD_US
            limits = f"limits=cgroup cpu={vcpu:.3f}vCPU memory={self._options.memory_mb}MB"
            burst = p.INIT_BURST_VCPUS if self._options.init_burst else vcpu
            limits += f" init-cpu={burst:g}vCPU"
        else:
            limits = f"limits=off ({self.limits_note})"
        return f"freeze={self.freeze_mode} {limits}"

    @property
    def groups(self) -> dict[str, str]:
        return {name: str(path) for name, path in self._groups.items()}

    # ---- membership -------------------------------------------------------------------------

    @contextlib.contextmanager
    def spawn_hook(self) -> Iterator[Callable[[], None]]:
        """A pre-exec function that moves the child into the environment before it runs.

        The group files are opened here, in the parent, so the child only writes its pid.
        """
        fds: list[int] = []
        try:
            for group in self._groups.values():
                fds.append(os.open(group / "cgroup.procs", os.O_WRONLY))
            prctl = self._prctl

            def join() -> None:
                pid = str(os.getpid()).encode()
                for fd in fds:
                    os.write(fd, pid)
                if prctl is not None:
                    # Nothing of the environment outlives an emulator that is killed outright.
                    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

            yield join
        finally:
            for fd in fds:
                os.close(fd)

    def track(self, pid: int) -> None:
        self._roots.add(pid)

    def untrack(self, pid: int) -> None:
        self._roots.discard(pid)

    def pids(self) -> list[int]:
        """Every process of the environment."""
        group = self._groups.get("freezer") or self._groups.get("memory")
        if group is not None:
            return _read_pids(group)
        return process_tree(self._roots)

    def peak_rss_bytes(self) -> int:
        return peak_rss_bytes(self.pids())

    def oom_kills(self) -> int:
        """How many processes the kernel killed for exceeding the memory limit so far."""
        group = self._groups.get("memory")
        if group is None:
            return 0
        try:
            for line in (group / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            return 0
        return 0

    # ---- freeze -----------------------------------------------------------------------------

    @property
    def frozen(self) -> bool:
        return self._frozen

    async def freeze(self) -> None:
        if self.freeze_mode == "off" or self._frozen:
            return
        self._frozen = True
        if self.freeze_mode == "cgroup":
            await self._set_freezer("FROZEN")
            return
        self._stopped = self.pids()
        _signal_all(self._stopped, signal.SIGSTOP)

    async def thaw(self) -> None:
        if not self._frozen:
            return
        self._frozen = False
        if self.freeze_mode == "cgroup":
            await self._set_freezer("THAWED")
            return
        _signal_all(self._stopped, signal.SIGCONT)
        self._stopped = []

    async def _set_freezer(self, state: str) -> None:
        state_file = self._groups["freezer"] / "freezer.state"
        state_file.write_text(state)
        if state == "THAWED":
            return
        # FREEZING is transitional: a task in uninterruptible sleep holds it there a moment.
        # The kernel offers no notification for it, so poll (bounded).
        for _ in range(int(FREEZE_WAIT_S / POLL_S)):
            if state_file.read_text().strip() == state:
                return
            await asyncio.sleep(POLL_S)

    # ---- ending processes -------------------------------------------------------------------

    async def kill_tree(self, pid: int) -> None:
        """SIGKILL one process and its descendants (thawing them so the signal takes effect)."""
        victims = process_tree([pid])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _signal_all(victims, signal.SIGKILL)
        _signal_all(victims, signal.SIGCONT)

    async def kill_all(self) -> list[int]:
        """SIGKILL every process of the environment; returns the pids that were still running."""
        if self.freeze_mode == "cgroup":
            # Frozen, nothing can fork away while the list is read; thawed, the kills land.
            await self._set_freezer("FROZEN")
            victims = _read_pids(self._groups["freezer"])
            _signal_all(victims, signal.SIGKILL)
            await self._set_freezer("THAWED")
            self._frozen = False
        else:
            victims = self.pids()
            for root in list(self._roots):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(root, signal.SIGKILL)
            _signal_all(victims, signal.SIGKILL)
            _signal_all(victims, signal.SIGCONT)
            self._frozen = False
            self._stopped = []
        for _ in range(int(EMPTY_WAIT_S / (POLL_S * 5))):
            if not any(_alive_not_zombie(x) for x in victims):
                break
            await asyncio.sleep(POLL_S * 5)
        return victims

    def close(self) -> None:
        """Removes the environment's groups (after kill_all)."""
        for group in self._groups.values():
            for _ in range(200):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _signal_all(_read_pids(group), signal.SIGKILL)
                    time.sleep(POLL_S * 5)
        self._groups.clear()


def _alive_not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def end_environment(groups: Iterable[str], *, wait_s: float = EMPTY_WAIT_S) -> None:
    """For a parent whose emulator died uncleanly (SIGKILL): thaw and kill whatever is left
    in the environment's cgroups (the paths of its ready file's "cgroups"), then remove them.
    Every wait is bounded; what cannot be done is left as it is."""
    paths = [Path(g) for g in groups]
    for group in paths:
        with contextlib.suppress(OSError):
            (group / "freezer.state").write_text("THAWED")
    for group in paths:
        with contextlib.suppress(OSError):
            _signal_all(_read_pids(group), signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    for group in paths:
        while _read_pids(group) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        with contextlib.suppress(OSError):
            group.rmdir()
