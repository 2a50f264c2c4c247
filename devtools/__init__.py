"""Developer tools that are not the conformance suite: ``bench`` (speed and memory of every
port, ``tools/bench``), ``drift`` (two conformance runs compared between framework releases,
``python -m devtools.drift``) and ``trace`` (the layer-by-layer command, ``tools/trace``).
They use the suite (:mod:`conformance`) and the package (:mod:`ports`); nothing imports them."""
