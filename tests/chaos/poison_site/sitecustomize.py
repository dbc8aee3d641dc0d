"""Tests only (on PYTHONPATH of a service under test): a frame that kills its preprocessing worker.

When ``XTALWATCH_TEST_POISON`` names a file, a preprocessing worker process that is handed that
file kills itself with SIGKILL, as the OOM killer does to a worker on a frame too big for memory.
The service's own process, the fork server and the resource tracker are left alone.
"""

import os

_POISON = os.environ.get("XTALWATCH_TEST_POISON")

if _POISON:
    import multiprocessing
    import signal

    import xtalwatch.stages.preprocess as _stage

    _real = _stage.preprocess_file

    def _poisoned(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if path.name == _POISON and multiprocessing.parent_process() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return _real(path, *args, **kwargs)

    _stage.preprocess_file = _poisoned
