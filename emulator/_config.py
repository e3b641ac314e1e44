"""The emulator's settings and the function's environment variables built from them.
Settings come from the command line only; every Lambda variable is set here in one place."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from emulator import _protocol as p

ACCOUNT_ID = "123456789012"
FUNCTION_VERSION = "$LATEST"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the emulator was asked for; paths are absolute."""

    opt_dir: Path  # the layer directory (/opt in Lambda)
    task_dir: Path  # the function code (/var/task in Lambda)
    handler: str  # module.function
    timeout_s: float = 3.0  # function timeout, covering runtime and extensions' post-invoke work
    memory_mb: int = 1769  # sizes the CPU share and the memory limit
    env: Mapping[str, str] = field(default_factory=dict)  # the function's own variables
    listen: tuple[str, int] = ("127.0.0.1", 9000)  # invoke door; port 0 picks a free port
    runtime_api: tuple[str, int] = ("127.0.0.1", 9001)  # AWS_LAMBDA_RUNTIME_API; 0 picks one
    freeze: bool = True
    freezer: str = "auto"  # auto | cgroup | signal
    limits: bool = True
    init_burst: bool = True  # Init runs with burst CPU, as on Lambda
    isolate: bool = False
    report_path: Path | None = None
    ready_file: Path | None = None
    runtime_python: str = sys.executable
    init_now: bool = False
    idle_s: float | None = None  # shut down after this long without an invocation
    init_timeout_s: float = p.INIT_TIMEOUT_S
    function_name: str = "function"
    region: str = "us-east-1"

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def visible_opt(self) -> Path:
        """The layer directory as the environment's processes see it."""
        return Path("/opt") if self.isolate else self.opt_dir

    @property
    def visible_task(self) -> Path:
        return Path("/var/task") if self.isolate else self.task_dir


@functools.cache
def python_version(runtime_python: str) -> str:
    """"3.X" of the runtime's interpreter, asked of the interpreter itself (a name such as
    python3 does not say the minor version)."""
    if runtime_python == sys.executable:
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    try:
        found = subprocess.run(
            [runtime_python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found = ""
    if found:
        return found
    digits = Path(runtime_python).name.removeprefix("python")
    return digits if digits[:1].isdigit() else f"{sys.version_info.major}.{sys.version_info.minor}"


def _runtime_dir(runtime_python: str) -> str:
    """Where the runtime client lives (Lambda's /var/runtime)."""
    if runtime_python == sys.executable:
        import importlib.util

        spec = importlib.util.find_spec("awslambdaric")
        if spec is not None and spec.submodule_search_locations:
            return str(Path(next(iter(spec.submodule_search_locations))).parent)
    return "/var/runtime"


def function_environment(config: Config, runtime_api: str, base: Mapping[str, str]) -> dict[str, str]:
    """The runtime's environment: a clean Lambda-like set plus the function's own variables."""
    version = python_version(config.runtime_python)
    opt = config.visible_opt
    task = config.visible_task
    path = ":".join(
        x for x in (str(opt / "bin"), base.get("PATH", "/usr/local/bin:/usr/bin:/bin")) if x
    )
    env = {
        "PATH": path,
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": FUNCTION_VERSION,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{config.timeout_s:g}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "emulator/[$LATEST]0000",
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        "LAMBDA_TASK_ROOT": str(task),
        "LAMBDA_RUNTIME_DIR": _runtime_dir(config.runtime_python),
        "_HANDLER": config.handler,
        p.OPT_DIR_VARIABLE: str(opt),
    }
    if "LD_LIBRARY_PATH" in base:
        env["LD_LIBRARY_PATH"] = base["LD_LIBRARY_PATH"]
    env.update(config.env)
    return env


def runtime_pythonpath(config: Config, env: Mapping[str, str]) -> str:
    """Lambda's search path for Python: the task, then the layer's python directories."""
    version = python_version(config.runtime_python)
    opt = config.visible_opt
    parts = [
        str(config.visible_task),
        str(opt / "python" / "lib" / f"python{version}" / "site-packages"),
        str(opt / "python"),
    ]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    return ":".join(parts)


def extension_environment(function_env: Mapping[str, str]) -> dict[str, str]:
    """Extensions see the function's variables except those only the runtime gets."""
    return {k: v for k, v in function_env.items() if k not in p.RUNTIME_ONLY_VARIABLES}


def runtime_command(config: Config, env: Mapping[str, str]) -> list[str]:
    """The runtime command, behind AWS_LAMBDA_EXEC_WRAPPER when one is set (as Lambda does)."""
    command = [config.runtime_python, "-m", "awslambdaric", config.handler]
    wrapper = env.get(p.EXEC_WRAPPER_VARIABLE)
    if not wrapper:
        return command
    if not config.isolate and wrapper.startswith("/opt/") and not Path(wrapper).exists():
        # Without a private /opt, a layer path names the same file under the layer directory.
        wrapper = str(config.opt_dir / wrapper.removeprefix("/opt/"))
    return [wrapper, *command]
