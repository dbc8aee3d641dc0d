"""This agent's place on a site: it keeps its lease alive and takes over work that a dead agent left.

Runs only with a site catalogue (PostgreSQL), where other agents write too. Every third of
``site.lease_seconds`` one thread renews this agent's lease and claims the unfinished images
of its imager that no live agent holds (``store/work.py``): those never claimed (catalogued
while no agent of this imager ran) and those of an agent whose lease ran out. Each goes to the
stage it still needs: a ``catalogued`` image, or one whose crop this host cannot read, to
preprocessing; a ``preprocessed`` one to classification. The agent registers before the
classify stage's backfill (which then takes only this agent's share, ``store/predictions.py``),
and its first pass runs at start, in place of the SQLite service's ``PreprocessPool.resume``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from xtalwatch.config import SiteConfig
from xtalwatch.observe.metrics import Metrics
from xtalwatch.stages.classify import ClassifyStage
from xtalwatch.stages.preprocess import PreprocessPool
from xtalwatch.store.catalogue import Catalogue
from xtalwatch.store.work import claim_unfinished, register_agent, renew_lease, retire_agent

__all__ = ["SiteAgent", "agent_name"]

log = logging.getLogger(__name__)

CLAIM_BATCH = 500  # images claimed per pass; a larger backlog is taken over a pass at a time


def agent_name(site: SiteConfig) -> str:
    """This process's name in the leases: ``site.agent`` (else host-imager), and a suffix new at each start."""
    base = site.agent or f"{socket.gethostname()}-{site.imager}"
    return f"{base}#{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SiteAgent:
    """Renews this agent's lease and feeds taken-over work to the stages, on its own thread."""

    def __init__(self, site: SiteConfig, catalogue: Catalogue, preprocess: PreprocessPool, classify: ClassifyStage,
                 metrics: Metrics):
        self.site = site
        self.metrics = metrics
        self.catalogue = catalogue
        self.preprocess = preprocess
        self.classify = classify
        self.name = agent_name(site)
        self.taken_over = 0  # images claimed from agents whose lease ran out, since start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> None:
        """Join the site: from now on, what this process catalogues is claimed by this agent."""
        register_agent(self.catalogue, self.name, imager=self.site.imager, host=socket.gethostname(), pid=os.getpid())
        self.catalogue.agent = self.name
        log.info("site: agent %s of imager %s; lease %.0f s", self.name, self.site.imager, self.site.lease_seconds)

    def start(self) -> None:
        """Take the work waiting for this imager, then keep the lease and take over on a daemon thread."""
        self.claim()
        self._thread = threading.Thread(target=self._run, name="site-agent", daemon=True)
        self._thread.start()

    def claim(self) -> int:
        """One pass: claim unfinished work of this imager that no live agent holds, and hand it on."""
        total = 0
        while True:
            batch = claim_unfinished(self.catalogue, self.name, self.site.imager,
                                     lease_seconds=self.site.lease_seconds, limit=CLAIM_BATCH)
            for image in batch:
                if image.status == "preprocessed" and image.crop_path and os.path.isfile(image.crop_path):
                    self.classify.submit(image.image_id, image.crop_path, image.completed_at, backlog=True)
                else:
                    self.preprocess.submit(image.image_id, image.path, image.sha256, image.completed_at)
            taken = sum(1 for image in batch if image.previous_agent is not None)
            if taken:
                self.taken_over += taken
                self.metrics.work_taken_over.inc(taken)
                previous = sorted({image.previous_agent for image in batch if image.previous_agent})
                log.warning("site: took over %d unfinished images of imager %s from %s (lease of %.0f s ran out)",
                            taken, self.site.imager, ", ".join(previous), self.site.lease_seconds)
            total += len(batch)
            if len(batch) < CLAIM_BATCH or self._stop.is_set():
                return total

    def _run(self) -> None:
        period = self.site.lease_seconds / 3
        while not self._stop.wait(period):
            started = time.monotonic()
            try:
                renew_lease(self.catalogue, self.name)
                self.claim()
            except Exception as exc:  # a dropped connection: the pool reconnects, the next pass retries
                log.warning("site: lease renewal or claim failed, retrying in %.0f s: %s", period,
                            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            if time.monotonic() - started > period:
                log.warning("site: a lease pass took %.1f s, more than a third of the lease", time.monotonic() - started)

    def stop(self) -> None:
        """Stop renewing and hand back unfinished claims, so that another agent takes them at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.site.lease_seconds)
        try:
            released = retire_agent(self.catalogue, self.name)
        except Exception as exc:
            log.warning("site: could not hand back this agent's claims (they are taken over after the lease): %s", exc)
            return
        if released:
            log.info("site: handed back %d unfinished images", released)
