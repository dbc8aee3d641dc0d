"""Tie a child process's life to the service's: when the service dies, even by ``kill -9``, so do its children.

Two tools, Linux only (elsewhere both are no-ops and children may outlive a killed service):

- :func:`die_with_parent` asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill this
  process when its parent dies. For a direct child of the service.
- :func:`die_with` ends this process when another one, not necessarily its parent, exits: a
  daemon thread waits on a pidfd of that process. The preprocessing workers need this one: the
  ``forkserver`` forks them, so their parent is the fork server, which lives as long as any
  worker holds its "alive" pipe, and a worker blocked on its call queue never sees the service go.
  Once the workers are gone, the fork server and the resource tracker see their pipes close and
  exit too.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
import threading

__all__ = ["die_with", "die_with_parent"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; exits at once if ``parent_pid`` is already gone.

    The kernel's "parent" is the *thread* that started this process: start the child from a
    thread that lives as long as the child should (the scheduler's job thread waits on it).
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)


def die_with(pid: int) -> None:
    """End this process (exit status 1) as soon as process ``pid`` exits; returns at once."""
    if not hasattr(os, "pidfd_open"):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # already gone
        os._exit(1)
    except OSError:  # a kernel before 5.3: no pidfd, nothing to wait on
        return

    def wait() -> None:
        select.select([fd], [], [])
        os._exit(1)  # the service is gone: whatever this process was doing has no one to report to

    threading.Thread(target=wait, name=f"die-with-{pid}", daemon=True).start()
