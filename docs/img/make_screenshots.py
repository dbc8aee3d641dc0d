"""Regenerate the review app's screenshots (docs/img/review_*.png) used in the README.

The screenshots are taken by the browser test itself, so they always show the pages as the test
proves them: a headless Chromium against the real service on a synthetic plate. Run from the
repository root::

    .venv/bin/python docs/img/make_screenshots.py

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/install-system-deps.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

IMG = Path(__file__).resolve().parent
REPO = IMG.parents[1]


def main() -> int:
    env = {**os.environ, "XTALWATCH_SCREENSHOTS": str(IMG)}
    test = "tests/test_review_browser.py::test_a_reviewer_browses_labels_with_the_keyboard_and_a_refitted_head_serves"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], env=env, cwd=REPO)
    if done.returncode == 0:
        print("\n".join(str(p.relative_to(REPO)) for p in sorted(IMG.glob("review_*.png"))))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
