"""A fault for tests and benches: a rule step pinned in C code, as a catastrophic pattern pins it.

Rule patterns run on RE2 (linear time), so no configuration can pin a worker any more; the
supervisor must still stop a step that does not end (a C extension, a driver call, a future
bug). With this folder first on PYTHONPATH and ``INLET_PIN_PATTERN`` set, every Inlet process
classifies a signal whose title matches nothing else by running that pattern on the title with
Python's backtracking ``re`` first: ``^(a+)+$`` on "aaa…a!" holds the interpreter lock for ever,
as a rule pattern did before RE2.
"""

import os
import re

PATTERN = os.environ.get("INLET_PIN_PATTERN")

if PATTERN:
    from gateway import rules

    _classify = rules.RuleSet.classify

    def classify(self, signal, **kwargs):
        re.match(PATTERN, signal.title or "")
        return _classify(self, signal, **kwargs)

    rules.RuleSet.classify = classify
