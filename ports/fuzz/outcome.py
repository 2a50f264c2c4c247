"""What a fuzz case ended in, the same for both engines.

A case must end in success or :class:`ports.errors.WeightsError`.  Anything else is a
*crash*: another exception, a ``MemoryError`` (also one that a reader turned into a
``WeightsError``), running past the time limit, or the process dying.  :class:`Summary` is a
campaign's tally, whichever engine ran it.
"""

from __future__ import annotations

import re
import resource
import signal
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ports import formats
from ports.errors import WeightsError

DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 1024


class CaseTimeout(BaseException):
    """Raised by the per-case timer (a BaseException so that no reader's
    ``except Exception`` can swallow it)."""


def message_class(reason: str) -> str:
    """A rejection message with the variable parts (numbers, quoted text) blanked."""
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", reason)
    text = re.sub(r"0x[0-9a-fA-F]+|\d+", "N", text)
    text = re.sub(r"\[[^\]]*\]", "[…]", text)
    return text[:90]


def memory_cause(e: BaseException | None) -> BaseException | None:
    """The ``MemoryError`` in ``e``'s chain of causes, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError):
            return e
        e = e.__cause__ or e.__context__
    return None


def classify(e: BaseException) -> dict:
    """The outcome of a case that raised ``e``: ``{"status": "rejected", "cls", "msg"}`` for
    a plain WeightsError, else ``{"status": "crash", "kind", "msg", "tb"}``."""
    if isinstance(e, CaseTimeout):
        return {"status": "crash", "kind": "timeout", "msg": str(e) or "no result in time",
                "tb": _tb(e)}
    if isinstance(e, WeightsError):
        mem = memory_cause(e)
        if mem is None:
            # the reason is cut, not the path: the same file says the same under any folder
            short = WeightsError(e.reason[:300], path=e.path, format=e.format)
            return {"status": "rejected", "cls": message_class(e.reason), "msg": str(short)}
        return {"status": "crash", "kind": "memory",
                "msg": f"MemoryError turned into WeightsError: {e}"[:300], "tb": _tb(mem)}
    kind = "memory" if isinstance(e, MemoryError) else "exception"
    return {"status": "crash", "kind": kind, "msg": f"{type(e).__name__}: {e}"[:300],
            "tb": _tb(e)}


def is_crash(e: BaseException) -> bool:
    """Whether a case that raised ``e`` is a finding (anything but a plain WeightsError)."""
    return not isinstance(e, WeightsError) or memory_cause(e) is not None


def _tb(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))


def run_one(path: str, name: str, timeout: float) -> dict:
    """Read one file in this process under a timer (SIGALRM); the outcome as a dict."""
    def on_alarm(signum, frame):
        raise CaseTimeout(f"no result within {timeout:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    t0 = time.perf_counter()
    out: dict = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                formats.read(path, name)
                out = {"status": "ok"}
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        if caught:
            out["warning"] = f"{caught[0].category.__name__}: {caught[0].message}"[:200]
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - every other outcome is the finding
        out = classify(e)
    finally:
        signal.signal(signal.SIGALRM, old)
    out["secs"] = time.perf_counter() - t0
    return out


# --- this process's memory -------------------------------------------------------------------
def status_kb(field_name: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_bytes() -> int:
    return status_kb("VmSize") * 1024


def peak_rss_kb() -> int:
    # VmHWM belongs to this program's address space; ru_maxrss would survive exec() and
    # report the parent's peak instead.
    return status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- a campaign's tally ------------------------------------------------------------------------
@dataclass
class Summary:
    format: str
    engine: str = "mutation"
    cases: int = 0
    ok: int = 0
    rejected: int = 0
    crashes: list[dict] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    examples: dict[str, int] = field(default_factory=dict)  # class -> its first case
    signatures: dict[str, int] = field(default_factory=dict)  # crash kind|message|where
    warnings: dict[str, int] = field(default_factory=dict)
    slowest: float = 0.0
    slowest_case: int = -1
    peak_rss_mb: float = 0.0
    peak_rss_case: int = -1
    memory_limit_mb: float = 0.0
    seeds: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None
    stopped_early: bool = False

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def count(self, r: dict, case: int) -> None:
        """Tally one non-crash result ``r`` (``status``, ``secs``, ``rss_kb``, ...)."""
        self.cases += 1
        if r.get("secs", 0.0) > self.slowest:
            self.slowest, self.slowest_case = r["secs"], case
        rss = r.get("rss_kb", 0) / 1024
        if rss > self.peak_rss_mb:
            self.peak_rss_mb, self.peak_rss_case = rss, case
        if "warning" in r:
            key = message_class(r["warning"])
            self.warnings[key] = self.warnings.get(key, 0) + 1
        if r["status"] == "ok":
            self.ok += 1
        elif r["status"] == "rejected":
            self.rejected += 1
            self.classes[r["cls"]] = self.classes.get(r["cls"], 0) + 1
            self.examples.setdefault(r["cls"], case)

    def add_crash(self, record: dict) -> bool:
        """Record a crash (``kind``, ``msg``, ``signature``...); True if its signature is
        new."""
        self.crashes.append(record)
        sig = record["signature"]
        self.signatures[sig] = self.signatures.get(sig, 0) + 1
        return self.signatures[sig] == 1


def signature(result: dict) -> str:
    """``kind|message head|innermost file:line``: crashes with one cause share it."""
    tb = result.get("tb", "")
    frames = re.findall(r'File "([^"]+)", line (\d+)', tb)
    where = f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "?"
    head = result.get("msg", "").split(":")[0]
    return f"{result.get('kind')}|{head}|{where}"


def format_summary(s: Summary) -> str:
    if s.skipped:
        return f"{s.format}: skipped ({s.skipped})"
    lines = [f"{s.format}: {s.cases} cases{' (stopped early)' if s.stopped_early else ''} "
             f"in {s.seconds:.1f} s ({s.engine}): {s.ok} ok, {s.rejected} "
             f"rejected (WeightsError), {len(s.crashes)} crashes; slowest case "
             f"{s.slowest * 1000:.1f} ms (#{s.slowest_case}); peak RSS "
             f"{s.peak_rss_mb:.0f} MB (#{s.peak_rss_case}, limit "
             f"{s.memory_limit_mb:.0f} MB)",
             "  seeds: " + "; ".join(s.seeds)]
    for cls, n in sorted(s.classes.items(), key=lambda kv: -kv[1])[:12]:
        first = f"  (#{s.examples[cls]})" if cls in s.examples else ""
        lines.append(f"  {n:7d}  {cls}{first}")
    if len(s.classes) > 12:
        lines.append(f"  ({len(s.classes) - 12} more rejection classes)")
    for w, n in sorted(s.warnings.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"  warning x{n}: {w}")
    for sig, n in sorted(s.signatures.items(), key=lambda kv: -kv[1]):
        first = next(c for c in s.crashes if c["signature"] == sig)
        lines.append(f"  CRASH x{n} {sig}: first #{first['case']}: {first['msg']} "
                     f"[{' '.join(first.get('recipe', []))}] {first.get('file', '')}")
    return "\n".join(lines)


def summary_table(summaries: list[Summary]) -> str:
    lines = ["format            cases       ok  rejected  crashes  slowest ms  peak RSS MB"]
    for s in summaries:
        if s.skipped:
            lines.append(f"{s.format:15s}  skipped: {s.skipped}")
        else:
            lines.append(f"{s.format:15s} {s.cases:6d} {s.ok:8d} {s.rejected:9d} "
                         f"{len(s.crashes):8d} {s.slowest * 1000:11.1f} "
                         f"{s.peak_rss_mb:12.0f}")
    return "\n".join(lines)
