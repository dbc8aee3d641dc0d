"""``xtalwatch doctor``: the checks, each a small function that returns what it found and what to fix.

Every check answers OK, WARN or FAIL with one line a person can act on. FAIL means the service
cannot run as configured; WARN means it runs, but something will bite later (a model missing, a
tight inotify limit, a GPU that is not visible). The checks only read: they never create a
folder or change a setting. Run them as the service user (``sudo -u xtalwatch xtalwatch doctor``)
so that the permission checks mean what they say.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xtalwatch.config import Settings
from xtalwatch.learn.registry import current_path
from xtalwatch.observe.preflight import existing_ancestor, plugin_problems
from xtalwatch.redact import redact_urls

__all__ = [
    "Check", "FolderCount", "count_folders", "run_checks", "format_check", "exit_code",
    "check_watch_dir", "check_state_dir", "check_disk", "check_inotify", "check_gpu", "check_model",
    "check_metrics_port", "check_plugins", "check_user", "DISK_FAIL_BYTES", "DISK_WARN_BYTES",
]

Level = Literal["OK", "WARN", "FAIL"]

# The same thresholds as the XtalwatchDiskCritical and XtalwatchDiskLow alerts.
DISK_FAIL_BYTES = 1_000_000_000
DISK_WARN_BYTES = 10_000_000_000
# Stop counting folders past this many: the limit check already has its answer.
FOLDER_COUNT_LIMIT = 2_000_000
INOTIFY_PROC = Path("/proc/sys/fs/inotify")


@dataclass(frozen=True)
class Check:
    """One finding: ``name`` of the check, its ``level``, what was found and, unless OK, the fix."""

    name: str
    level: Level
    message: str
    fix: str = ""


@dataclass(frozen=True)
class FolderCount:
    """Folders under a root (the root included), those that cannot be listed, and whether counting stopped early."""

    dirs: int
    unreadable: tuple[Path, ...]
    truncated: bool


def count_folders(root: Path, limit: int = FOLDER_COUNT_LIMIT) -> FolderCount:
    """Walk ``root`` without following symlinks; inotify needs one watch per folder counted here."""
    dirs, unreadable, stack = 0, [], [root]
    while stack:
        folder = stack.pop()
        dirs += 1
        if dirs >= limit:
            return FolderCount(dirs, tuple(unreadable), True)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
        except OSError:
            unreadable.append(folder)
    return FolderCount(dirs, tuple(unreadable), False)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


# -- folders -----------------------------------------------------------------------------------
def check_watch_dir(settings: Settings, folders: FolderCount | None) -> Check:
    watch = settings.watch.dir
    if watch is None:
        return Check("watch", "FAIL", "watch.dir is not set", "set watch.dir in the config to the imager's output folder")
    if not os.access(watch, os.R_OK | os.X_OK):
        return Check("watch", "FAIL", f"{watch} cannot be listed by this user",
                     f"give the service user read access: sudo setfacl -R -m u:xtalwatch:rX {watch}")
    if folders is not None and folders.unreadable:
        shown = ", ".join(str(p) for p in folders.unreadable[:3])
        more = f" and {len(folders.unreadable) - 3} more" if len(folders.unreadable) > 3 else ""
        return Check("watch", "WARN", f"{len(folders.unreadable)} folders under {watch} cannot be listed: {shown}{more}",
                     f"images in them are never seen; grant read access: sudo setfacl -R -m u:xtalwatch:rX {watch}")
    count = f" ({folders.dirs} folders{'+' if folders.truncated else ''})" if folders is not None else ""
    return Check("watch", "OK", f"{watch} is readable{count}")


def check_state_dir(settings: Settings) -> Check:
    state = settings.state.dir
    if state.exists() and not state.is_dir():
        return Check("state", "FAIL", f"{state} exists but is not a folder", "point state.dir at a folder")
    if state.is_dir():
        if not os.access(state, os.W_OK | os.X_OK):
            return Check("state", "FAIL", f"{state} is not writable by this user",
                         f"sudo chown -R xtalwatch:xtalwatch {state}")
        return Check("state", "OK", f"{state} is writable")
    parent = existing_ancestor(state)
    if os.access(parent, os.W_OK | os.X_OK):
        return Check("state", "WARN", f"{state} does not exist yet; it will be created in {parent}",
                     "nothing to do, or create it now: sudo install -d -o xtalwatch -g xtalwatch -m 0750 " + str(state))
    return Check("state", "FAIL", f"{state} does not exist and {parent} is not writable",
                 f"sudo install -d -o xtalwatch -g xtalwatch -m 0750 {state} (systemd's StateDirectory= does this)")


def check_disk(settings: Settings, fail_bytes: int = DISK_FAIL_BYTES, warn_bytes: int = DISK_WARN_BYTES) -> Check:
    where = existing_ancestor(settings.state.dir)
    try:
        usage = shutil.disk_usage(where)
    except OSError as exc:
        return Check("disk", "FAIL", f"cannot read free space of {where}: {exc}", "check the mount")
    text = f"{_gb(usage.free)} free of {_gb(usage.total)} at {where}"
    fix = "free space, or move state.dir to a larger disk (then update ReadWritePaths= in the unit)"
    if usage.free < fail_bytes:
        return Check("disk", "FAIL", text, fix)
    if usage.free < warn_bytes or usage.free < 0.10 * usage.total:
        return Check("disk", "WARN", text, fix)
    return Check("disk", "OK", text)


# -- kernel limits, GPU, model --------------------------------------------------------------------
def check_inotify(settings: Settings, folders: FolderCount | None, proc: Path = INOTIFY_PROC) -> Check:
    if settings.watch.mode == "poll":
        return Check("inotify", "OK", "watch.mode is poll: inotify is not used")
    try:
        watches = int((proc / "max_user_watches").read_text())
        instances = int((proc / "max_user_instances").read_text())
    except (OSError, ValueError) as exc:
        return Check("inotify", "WARN", f"cannot read inotify limits from {proc}: {exc}",
                     "on Linux check the sysctls fs.inotify.max_user_watches and max_user_instances; "
                     "elsewhere consider watch.mode: poll")
    needed = folders.dirs if folders is not None else 0
    suggested = max(524288, 2 * needed)
    sysctl_fix = (f"echo fs.inotify.max_user_watches={suggested} | sudo tee /etc/sysctl.d/60-xtalwatch.conf "
                  "&& sudo sysctl --system")
    text = f"{needed}{'+' if folders is not None and folders.truncated else ''} folders to watch, " \
           f"max_user_watches={watches}, max_user_instances={instances}"
    if needed >= watches:
        return Check("inotify", "FAIL", text, sysctl_fix + " (or watch.mode: poll)")
    if needed > watches // 2:
        return Check("inotify", "WARN", text + " (over half the limit, shared by all of this user's processes)",
                     sysctl_fix)
    if instances < 8:
        return Check("inotify", "WARN", text, "echo fs.inotify.max_user_instances=128 | sudo tee -a "
                     "/etc/sysctl.d/60-xtalwatch.conf && sudo sysctl --system")
    return Check("inotify", "OK", text)


def check_gpu(settings: Settings) -> Check:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        return Check("gpu", "FAIL", f"torch cannot be imported: {exc}", "reinstall: .venv/bin/pip install -e .")
    wanted = settings.train.device
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("gpu", "OK", f"CUDA {torch.version.cuda}: {names}")
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is a CPU-only build"
        fix = "install the CUDA build of torch to train on a GPU"
    elif any(Path("/dev").glob("nvidia[0-9]*")):
        why = "an NVIDIA device exists but CUDA cannot use it"
        fix = ("check the driver with nvidia-smi (it must support CUDA " f"{torch.version.cuda}), "
               "CUDA_VISIBLE_DEVICES, and that the unit does not set PrivateDevices=")
    else:
        why = "no CUDA GPU is visible"
        fix = "training runs on CPU (slow but works); add a GPU for faster nightly training"
    level: Level = "FAIL" if wanted == "cuda" else "WARN"
    if wanted == "cuda":
        fix = f"train.device is cuda: {fix}, or set train.device: auto"
    return Check("gpu", level, why, fix)


def check_model(settings: Settings) -> Check:
    current = current_path(settings.state.dir)
    if current.is_symlink() and not current.exists():
        return Check("model", "FAIL", f"{current} points to {os.readlink(current)}, which is missing",
                     "xtalwatch models rollback, or xtalwatch models promote VERSION")
    if current.is_dir():
        return Check("model", "OK", f"serving {current.resolve().name}")
    return Check("model", "WARN", "no model yet: images are catalogued but not scored",
                 f"the first training starts after train.min_images ({settings.train.min_images}) images; "
                 "or run: xtalwatch train --now")


# -- service environment ----------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_metrics_port(settings: Settings, timeout: float = 1.0) -> Check:
    cfg = settings.metrics
    if not cfg.enabled:
        return Check("metrics", "OK", "metrics.enabled is false: no /metrics endpoint")
    exposed = "" if _is_loopback(cfg.host) else f"; {cfg.host} is reachable from the network"
    level: Level = "OK" if not exposed else "WARN"
    fix = "" if not exposed else "bind 127.0.0.1 unless Prometheus runs elsewhere, and firewall the port"
    if cfg.port == 0:
        return Check("metrics", level, f"metrics.port is 0: a free port is picked at start{exposed}", fix)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "") else "::1" if cfg.host == "::" else cfg.host
    try:
        sock = socket.create_connection((host, cfg.port), timeout=timeout)
    except ConnectionRefusedError:
        return Check("metrics", level, f"{cfg.host}:{cfg.port} is free{exposed}", fix)
    except OSError as exc:
        return Check("metrics", "WARN", f"cannot probe {cfg.host}:{cfg.port}: {exc}", "check metrics.host")
    reply = b""
    with sock:
        # Something listens: ask it whether it is xtalwatch. A hang-up or silence means it is not.
        try:
            sock.sendall(f"GET /healthz HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            while chunk := sock.recv(4096):
                reply += chunk
        except OSError:
            pass
    body = reply.partition(b"\r\n\r\n")[2]
    try:
        answered = json.loads(body) == {"ok": True}
    except ValueError:
        answered = False
    if answered:
        return Check("metrics", level, f"xtalwatch is already serving on {cfg.host}:{cfg.port}{exposed}", fix)
    return Check("metrics", "FAIL", f"{cfg.host}:{cfg.port} is taken by another program",
                 f"pick another metrics.port, or find the owner: ss -ltnp 'sport = :{cfg.port}'")


def check_plugins(settings: Settings) -> Check:
    """The adapters and alert sinks load and can be built, as ``run`` (and ``config check``) build them."""
    problems = plugin_problems(settings)
    if not problems:
        return Check("plugins", "OK", f"{len(settings.adapters.order)} adapters and "
                     f"{len(settings.alerts.sinks) or 1} alert sinks load")
    key, message = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return Check("plugins", "FAIL", redact_urls(f"{key}: {message}{more}"),
                 "fix the key named above; `xtalwatch config check FILE` lists every problem")


def check_user() -> Check:
    if os.geteuid() == 0:
        return Check("user", "WARN", "running as root: the permission checks say what root may do",
                     "run as the service user: sudo -u xtalwatch /opt/xtalwatch/.venv/bin/xtalwatch doctor")
    import pwd

    return Check("user", "OK", f"running as {pwd.getpwuid(os.geteuid()).pw_name}")


# -- all together -------------------------------------------------------------------------------------
def run_checks(settings: Settings, proc: Path = INOTIFY_PROC) -> list[Check]:
    """Every check that needs valid settings, in the order a person would fix them."""
    watch = settings.watch.dir
    folders = count_folders(watch) if watch is not None and watch.is_dir() else None
    return [
        check_user(),
        check_watch_dir(settings, folders),
        check_state_dir(settings),
        check_disk(settings),
        check_inotify(settings, folders, proc),
        check_metrics_port(settings),
        check_plugins(settings),
        check_gpu(settings),
        check_model(settings),
    ]


def format_check(check: Check) -> str:
    """``OK    name     message``, then an indented ``fix:`` line unless OK."""
    line = f"{check.level:<5} {check.name:<8} {check.message}"
    if check.fix and check.level != "OK":
        line += f"\n{'':<5} {'':<8} fix: {check.fix}"
    return line


def exit_code(checks: list[Check]) -> int:
    """1 when anything FAILed, else 0 (warnings do not fail)."""
    return 1 if any(c.level == "FAIL" for c in checks) else 0
