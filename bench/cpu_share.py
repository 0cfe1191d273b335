"""CPU time each process of a server spends per request or per second: which process (which hop) costs what.

Read from ``/proc/<pid>/stat`` before and after a load run, for every process of the server's
process tree (Ray's daemons, proxy, HAProxy, replicas) and for this process (the load generator).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from bench.processes import own_processes

_TICKS = os.sysconf("SC_CLK_TCK")
MACHINE_OTHER = "(machine) other processes"
MACHINE_IDLE = "(machine) idle"
MACHINE_STOLEN = "(machine) stolen by the hypervisor"


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _machine_ticks() -> dict[str, int]:
    """The whole machine's CPU time from ``/proc/stat`` (all CPUs), in clock ticks."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return {"busy": user + nice + system + irq + softirq, "idle": idle + iowait, "steal": steal}


def process_label(pid: int) -> str:
    """``ray::ServeReplica:default:MultiModelRouter`` -> ``replica MultiModelRouter``; else the program name.

    Processes with the same label (the dashboard's module processes, say) are summed by ``per_request_ms``.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace").strip()
    if first.startswith("ray-dashboard-"):  # the dashboard's module processes retitle themselves
        return "dashboard modules"
    if first.startswith("ray::ServeReplica:"):
        return "replica " + first.split(":")[-1].split(".")[0].strip()
    if first.startswith("ray::"):
        return re.sub(r"\..*$", "", first[len("ray::"):]).strip()
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args[:3]:
        return args[args.index("-m") + 1]
    if "-c" in args[:4]:
        return "python -c (a worker process)"
    scripts = [a for a in args[1:4] if a.endswith(".py")]
    if scripts:
        return Path(scripts[0]).name
    return Path(args[1] if len(args) > 1 and Path(args[0]).name.startswith("python") else first).name


def labels_by_share(cpu: dict[str, dict[str, float]], leave_out: tuple[str, ...] = ()) -> list[str]:
    """The process labels of several systems' CPU readings (system -> label -> ms), largest share first."""
    labels = {label for readings in cpu.values() for label in readings} - set(leave_out)
    return sorted(labels, key=lambda label: -max(readings.get(label, 0) for readings in cpu.values()))


class CpuMeter:
    """``with CpuMeter(root_pid) as meter: <load>``; then ``meter.per_request_ms(n)`` or ``meter.per_second_ms()``.

    ``self_label`` names this process's share (the load generator, unless the engine runs here too).
    """

    def __init__(self, root_pid: int, self_label: str = "load generator") -> None:
        self.root_pid = root_pid
        self.self_label = self_label
        self.before: dict[int, float] = {}
        self.after: dict[int, float] = {}
        self.seconds = 0.0
        self.machine_before: dict[str, int] = {}
        self.machine_after: dict[str, int] = {}

    def _snapshot(self) -> dict[int, float]:
        pids = [*own_processes(self.root_pid), self.root_pid, os.getpid()]
        return {pid: cpu for pid in pids if (cpu := _cpu_seconds(pid)) is not None}

    def __enter__(self) -> CpuMeter:
        self.before, self.machine_before = self._snapshot(), _machine_ticks()
        self.seconds = -time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter()
        self.after, self.machine_after = self._snapshot(), _machine_ticks()

    def per_request_ms(self, requests: int, floor_ms: float = 0.005) -> dict[str, float]:
        """CPU ms per request by process label (processes under ``floor_ms`` left out)."""
        return self._ms_by_label(requests, floor_ms)

    def per_second_ms(self, floor_ms: float = 0.5) -> dict[str, float]:
        """CPU ms per wall-clock second by process label (1000 is one CPU kept busy), and where the rest of
        the machine's CPU time went: other processes, idle, and time the hypervisor gave to other guests."""
        out = self._ms_by_label(self.seconds, floor_ms)
        machine = {k: (self.machine_after[k] - self.machine_before[k]) * 1000 / _TICKS / self.seconds
                   for k in self.machine_after}
        extra = {MACHINE_OTHER: machine["busy"] - sum(out.values()), MACHINE_IDLE: machine["idle"],
                 MACHINE_STOLEN: machine["steal"]}
        return {**out, **{k: round(max(v, 0.0), 3) for k, v in extra.items()}}

    def _ms_by_label(self, divisor: float, floor_ms: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, cpu in self.after.items():
            label = self.self_label if pid == os.getpid() else process_label(pid)
            out[label] = out.get(label, 0.0) + (cpu - self.before.get(pid, cpu)) * 1000 / divisor
        return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= floor_ms}
