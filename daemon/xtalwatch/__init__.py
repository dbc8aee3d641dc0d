"""xtalwatch: watches a crystallisation plate imager, catalogues every image once, and scores drops.

The data flow, one module per stage: ``watch`` → ``ingest`` → ``catalogue`` → ``preprocess`` →
classify → alerts and ``metrics``; ``service`` owns their life cycle.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
