"""The catalogue: every image, label, prediction and event, in SQLite, behind named queries.

Every SQL statement of xtalwatch belongs here, in the module that owns its tables:

* ``catalogue.py``: the connection (one writer, WAL), the schema and its migrations, and ingest's
  tables (plates, wells, images, files, rejected, preprocess);
* ``events.py``: the ``events`` table;
* ``labels.py``: the ``labels`` table, and importing labels from a CSV or an ImageFolder;
* ``predictions.py``: the ``predictions`` table, and the images still waiting for a model's call;
* ``models.py``: the ``models`` table, the catalogue's mirror of the model registry;
* ``outcomes.py``: the calls the per-well rule reads, and the ``well_outcomes`` table;
* ``report.py``: counts and listings for ``xtalwatch status`` and the demo.

A named query is a function whose first argument is ``db``: the service's ``Catalogue``, or a
``sqlite3.Connection`` (read-only from ``Catalogue.open_readonly``, or the one
``Catalogue.transaction()`` yields, to make several queries one atomic unit).
"""
