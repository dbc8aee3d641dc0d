"""The service's data flow, one module per stage, in the order an image meets them.

watch → ingest (probe, adapters) → preprocess → classify → outcomes. ``pipeline`` wires them
together for both ``Service`` and ``xtalwatch ingest``.
"""
