"""What reading an alert mail costs on top of parsing it: the [[mail_alert]] presets vs the bare e-mail parse.

Each preset's problem mail (tests/fixtures/mail/) is parsed with ``parse_email`` (the baseline, what every
mail costs today) and then read by its rule (``read_groups`` + ``alert_signal``); a hostile subject of
growing length meets a catastrophic pattern on RE2 (what Inlet runs), where Python's backtracking ``re``
would double its work per character.

Run: ``PYTHONPATH=. python bench/mail_alert.py``
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.rules import compile_regex  # noqa: E402
from parsers.email import EmailOptions, parse_email  # noqa: E402
from parsers.email.monitoring import MAIL_PRESETS, alert_signal, read_groups  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mail"
PROBLEMS = {
    "nagios": "nagios-problem.eml",
    "icinga2": "icinga2-problem.eml",
    "monit": "monit-problem.eml",
    "zabbix": "zabbix-problem.eml",
}
ROUNDS = 2000


def per_call(function, rounds: int = ROUNDS, tries: int = 5) -> float:
    """Best per-call time in seconds over ``tries`` runs of ``rounds`` calls."""
    best = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        for _ in range(rounds):
            function()
        best = min(best, (time.perf_counter() - started) / rounds)
    return best


def main() -> None:
    options = EmailOptions(message_id_secret=b"k" * 32)
    print(f"{'preset':>8} {'parse µs':>10} {'read µs':>9} {'read/parse':>11}")
    for name, fixture in PROBLEMS.items():
        preset = MAIL_PRESETS[name]
        subject = tuple(compile_regex(p, ("bench",)) for p in preset.subject)
        body = tuple(compile_regex(p, ("bench",)) for p in preset.body)
        raw = (FIXTURES / fixture).read_bytes()
        mail = parse_email(raw, options)
        text = mail.full_text or mail.text

        def read(mail=mail, subject=subject, body=body, text=text, preset=preset):
            groups = read_groups(subject, body, mail.title, text)
            return alert_signal(mail, preset.name, groups, states=preset.states, title=preset.title)

        assert read() is not None
        parse = per_call(lambda raw=raw: parse_email(raw, options), rounds=500)
        took = per_call(read)
        print(f"{name:>8} {parse * 1e6:>10.1f} {took * 1e6:>9.1f} {took / parse:>11.2f}")

    catastrophic = (compile_regex(r"^(?P<host>(a+)+)b (?P<state>\w+)$", ("bench",)),)
    print(f"\n{'hostile subject length':>22} {'RE2 µs':>9}")
    for length in (30, 1_000, 100_000):
        hostile = "a" * length + " FIRING"
        took = per_call(lambda h=hostile: read_groups(catastrophic, (), h, ""), rounds=50)
        print(f"{len(hostile):>22} {took * 1e6:>9.1f}")


if __name__ == "__main__":
    main()
