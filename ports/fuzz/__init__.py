"""Fuzzing every weights reader (``tools/fuzz``), and the table of bad inputs.

Two engines run the same seed files (:mod:`.seeds`) through :func:`ports.formats.read` and
judge every case the same way (:mod:`.outcome`: success or ``WeightsError``, anything else
is a crash whose input is kept and replayable):

* :mod:`.mutation`: the home-made mutation engine, the default: no dependency, every case
  reproducible from ``(seed, format, index)``, and on the same budget it reaches more of
  every reader than atheris (``docs/fuzzing.md`` has the comparison).
* :mod:`.atheris_engine`: atheris, coverage-guided with libFuzzer underneath
  (``--engine atheris``; needs ``atheris``: ``python3 -m tox -e fuzz``).

:mod:`.bad_inputs` writes ``docs/bad-inputs.md``; :mod:`.compare` measures the engines
against each other; :mod:`.cli` is the command line.
"""

from .bad_inputs import bad_inputs_table, bad_predict_inputs
from .mutation import Mutator, fuzz, replay
from .outcome import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, Summary, format_summary, run_one
from .seeds import ROOT, Seed, availability, build_seeds, quantized, write_seeded

__all__ = ["DEFAULT_MEMORY_MB", "DEFAULT_TIMEOUT", "ROOT", "Mutator", "Seed", "Summary",
           "availability", "bad_inputs_table", "bad_predict_inputs", "build_seeds",
           "format_summary", "fuzz", "quantized", "replay", "run_one", "write_seeded"]
