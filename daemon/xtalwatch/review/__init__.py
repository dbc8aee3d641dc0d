"""The review app: scientists see every call, correct the ones that matter, and the model learns.

``app.review_routes(ReviewContext)`` gives the routes ``observe.web.build_app`` mounts beside
``/metrics``. Modules: ``site`` (the context and what pages share), ``access`` (who may write),
``pages`` (plates, plate map, well, hits, health; the map's grid is ``platemap``), ``models``
(registry, promote, rollback), ``labelling`` (the review queue, labels, sign-in), ``thumbs``
(cached pictures) and ``export`` (per-well outcomes for a LIMS). Kept free of imports so that
``review.access`` loads alone.
"""
