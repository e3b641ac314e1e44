"""A function that reports its cgroup CPU quota at Init (module import) and at invocation."""

from __future__ import annotations


def _quota() -> int:
    with open("/proc/self/cgroup") as cgroups:
        for line in cgroups:
            _, controllers, path = line.strip().split(":", 2)
            if "cpu" in controllers.split(","):
                with open(f"/sys/fs/cgroup/cpu{path}/cpu.cfs_quota_us") as quota:
                    return int(quota.read())
    return 0


AT_INIT = _quota()


def handler(event, context):
    return {"init": AT_INIT, "invoke": _quota()}
