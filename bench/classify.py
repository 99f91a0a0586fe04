"""How classification cost grows with the number of rules.

Generates 1,000 realistic rules (services, symptoms, alert labels, senders, a few
regexes) and a few thousand signals (emails and alerts), then prints median and
p99 µs per classification for 10, 100 and 1,000 rules, side by side with a bare
baseline measured in the same run (cutting subject and body into words, which
any classification must do) and with evaluating every rule without the index.

Run: ``PYTHONPATH=. python bench/classify.py``
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.rules import Keywords, Rule, compile_rules, words  # noqa: E402
from parsers.signal import Signal  # noqa: E402

SERVICES = """payroll billing invoicing crm erp sap exchange outlook sharepoint teams jira confluence gitlab jenkins
vpn citrix printer wifi firewall proxy dns dhcp ldap active-directory sso okta backup storage nas san vmware
kubernetes docker postgres oracle mysql redis kafka rabbitmq elasticsearch grafana prometheus website webshop
checkout payments warehouse logistics hr recruiting telephony voip intranet helpdesk timesheet expenses
datawarehouse reporting tableau powerbi salesforce zendesk slack zoom badge-reader cctv""".split()  # noqa: SIM905
SYMPTOMS = ["down", "slow", "error", "timeout", "not working", "unreachable", "crash", "cannot login", "degraded"]
FILLER = """hello team we noticed that since this morning the users in the office report problems could you
please have a look at it as soon as possible thanks in advance best regards the screen shows a message and
nothing happens after clicking the button again we tried restarting the laptop but it did not help""".split()  # noqa: SIM905
SITES = ["berlin", "paris", "london", "madrid", "oslo", "vienna", "prague", "dublin", "lisbon", "rome"]
GROUPS = ["service-desk", "network", "apps", "dba", "infra", "security"]


def service_names(n: int) -> list[str]:
    """Realistic-looking service names: the base list, then per-site variants (``payroll berlin``)."""
    names = list(SERVICES)
    for site in SITES:
        names += [f"{s} {site}" for s in SERVICES]
    return names[:n]


def make_rules(n: int, rng: random.Random) -> list[Rule]:
    rules = [
        Rule(name="regex-ticket", text=Keywords(regex=r"\b(?:INC|CHG)-\d{5,}\b"), tags=["has-ticket"]),
        Rule(name="regex-disk", subject=Keywords(regex=r"disk (?:usage )?(?:at )?9\d\s?%"), impact="high"),
        Rule(name="regex-ip", body=Keywords(regex=r"\b10\.\d+\.\d+\.\d+\b"), tags=["has-ip"]),
    ]
    names = service_names(n)
    for i in range(n - len(rules)):
        svc = names[i % len(names)]
        kind = rng.random()
        common = {"service": svc, "group": rng.choice(GROUPS), "category": svc.split()[0]}
        if kind < 0.55:
            alias = f"{svc} server"
            rule = Rule(name=f"svc-{i}", subject=Keywords(any=[svc, alias], none=["test"]), **common)
        elif kind < 0.75:
            symptom = rng.choice(SYMPTOMS)
            rule = Rule(
                name=f"sym-{i}",
                text=Keywords(all=[svc, symptom]),
                impact=rng.choice(["high", "medium"]),
                urgency="high",
            )
        elif kind < 0.9:
            rule = Rule(
                name=f"alert-{i}",
                source=["alertmanager"],
                labels={"service": Keywords(any=[svc]), "severity": Keywords(any=["critical", "page"])},
                urgency="high",
                **common,
            )
        else:
            rule = Rule(name=f"sender-{i}", sender=Keywords(any=[f"{svc.replace(' ', '-')}-alerts"]), **common)
        rules.append(rule)
    return rules


def make_signals(n: int, rng: random.Random) -> list[Signal]:
    names = service_names(len(SERVICES) * (len(SITES) + 1))
    out = []
    for _ in range(n):
        svc, symptom = rng.choice(names), rng.choice(SYMPTOMS)
        if rng.random() < 0.7:
            body = " ".join(rng.choice(FILLER) for _ in range(rng.randint(30, 200)))
            body = body.replace("problems", f"problems with {svc}", 1)
            if rng.random() < 0.2:
                body += " see INC-123456 on 10.1.2.3"
            out.append(
                Signal(
                    source="email",
                    title=f"{svc.title()} {symptom} since 9:00",
                    text=body,
                    reporter_email=f"user{rng.randint(1, 5000)}@example.com",
                    reporter_name="Some User",
                )
            )
        else:
            labels = {
                "alertname": rng.choice(["HighLatency", "TargetDown", "DiskFull", "ErrorRate"]),
                "service": svc,
                "severity": rng.choice(["critical", "warning", "info"]),
                "instance": f"{svc.split()[0]}-{rng.randint(1, 40)}:9100",
            }
            out.append(Signal(source="alertmanager", title=f"[FIRING:1] {labels['alertname']} {svc}", labels=labels))
    return out


def measure(fn, signals: list[Signal], rounds: int = 3) -> list[float]:
    """µs per call, per signal (the best of ``rounds`` per signal, to shed scheduler noise)."""
    for s in signals[:200]:
        fn(s)  # warm-up
    best = [float("inf")] * len(signals)
    for _ in range(rounds):
        for i, s in enumerate(signals):
            t0 = time.perf_counter_ns()
            fn(s)
            best[i] = min(best[i], (time.perf_counter_ns() - t0) / 1000)
    return best


def summary(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), statistics.quantiles(samples, n=100)[98]


def main() -> None:
    rng = random.Random(42)
    all_rules = make_rules(1000, rng)
    signals = make_signals(3000, rng)

    def baseline(s: Signal) -> None:
        words(s.title)
        words(s.text)

    rows = [("baseline: cut subject + body into words", summary(measure(baseline, signals)))]
    medians = {}
    for n in (10, 100, 1000):
        ruleset = compile_rules(all_rules[:n])
        result = summary(measure(ruleset.classify, signals))
        medians[n] = result[0]
        rows.append((f"classify, {n:>4} rules (indexed)", result))
    full = compile_rules(all_rules)
    scan = measure(full._classify_every_rule, signals[:1000], rounds=1)
    rows.append(("classify, 1000 rules, every rule evaluated", summary(scan)))

    print(f"{len(signals)} signals (70 % emails of 30-200 words, 30 % alerts); median / p99 µs per signal")
    for label, (median, p99) in rows:
        print(f"  {label:<45} {median:8.1f} {p99:8.1f}")
    base = rows[0][1][0]
    print(f"ratio 1000 rules / 10 rules (median):      {medians[1000] / medians[10]:.2f}x  (rules grew 100x)")
    print(f"ratio 1000 rules / baseline (median):      {medians[1000] / base:.2f}x")
    print(f"ratio every-rule scan / indexed, 1000:     {rows[-1][1][0] / medians[1000]:.1f}x")
    matched = sum(1 for s in signals if full.classify(s).matched)
    print(f"signals matched by at least one rule:      {matched} / {len(signals)}")


if __name__ == "__main__":
    main()
