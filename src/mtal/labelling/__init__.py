"""Labels from people: a labelling request (manifest + CSV / Label Studio export) goes
out, the delivered label files come back through ``mtal label import``.

- :mod:`~mtal.labelling.manifest`: the request manifest ``requests/<id>.json`` (which
  image/task pairs, for which cycle, from which pool, into which new pool file);
- :mod:`~mtal.labelling.export`: the request as a CSV or as Label Studio tasks JSON with
  one labeling config per task kind;
- :mod:`~mtal.labelling.validate` and :mod:`~mtal.labelling.importer`: check every
  delivered label with the dataset loader's own reader, copy it into the dataset's
  layout and write the new pool atomically;
- :mod:`~mtal.labelling.human`: the ``loop.oracle: human`` side of the loop (request,
  stop, continue after the import).
"""

#: exit status of ``mtal loop`` when it stopped to wait for labels from people
EXIT_LABELS_REQUESTED = 3
