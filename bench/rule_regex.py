"""What one catastrophic rule pattern costs against a crafted sender: RE2 (what Inlet runs) vs Python's re.

The rule ``^([a-z0-9]+[._-]?)+@partner\\.example$`` meets senders ``a…a@partner.example.org`` of growing
length. Python's backtracking engine doubles its work with each letter; RE2 (``google-re2``, used by
``gateway.rules``) stays linear. Python's ``re`` is timed only up to a few seconds per try.

Run: ``PYTHONPATH=. python bench/rule_regex.py``
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.rules import Keywords, Rule, compile_rules  # noqa: E402
from parsers.signal import Signal  # noqa: E402

PATTERN = r"^([a-z0-9]+[._-]?)+@partner\.example$"
RE_BUDGET = 5.0  # seconds: stop timing Python's re once one try costs more


def best_of(function, tries: int = 5) -> float:
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    ruleset = compile_rules([Rule(name="partner", sender=Keywords(regex=PATTERN), category="partner")])
    backtracking = re.compile(PATTERN, re.IGNORECASE)
    print(f"{'sender length':>14} {'inlet (RE2) ms':>16} {'python re ms':>14}")
    re_gave_up = False
    for letters in (16, 20, 22, 24, 26, 1_000, 100_000):
        sender = "a" * letters + "@partner.example.org"
        signal = Signal(source="email", title="hello", reporter_email=sender)
        inlet = best_of(lambda s=signal: ruleset.classify(s))
        if re_gave_up:
            shown = "(not run)"
        else:
            took = best_of(lambda s=sender: backtracking.search(s), tries=1)
            shown = f"{took * 1000:.1f}"
            re_gave_up = took > RE_BUDGET / 2
        print(f"{len(sender):>14} {inlet * 1000:>16.3f} {shown:>14}")


if __name__ == "__main__":
    main()
