"""``tools/trace``: the layer-by-layer comparison as a command.  ``cli`` runs every port in
its own environment through ``worker`` and compares with :mod:`conformance.trace`."""
