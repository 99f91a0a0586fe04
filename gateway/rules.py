r"""Classification rules: keyword and label conditions in, category/service/impact/urgency/group out.

Configuration (``[[rule]]``, evaluated in file order)::

    [[rule]]
    name = "vpn"                                   # required, unique
    subject = { any = ["vpn", "remote access"], none = ["test"] }
    labels.severity = { any = ["critical"] }       # label name -> condition
    source = ["email", "manual"]
    category = "network"                           # actions: what the rule sets
    impact = "medium"
    group = "network"
    tags = ["vpn"]
    stop = false

Conditions (all given conditions must hold; a rule without any matches every signal):

- ``subject``, ``body``, ``text`` (subject or body), ``sender`` (reporter name and
  address), ``recipient`` (the address the message came to; else its To and Cc),
  and ``labels.<name>`` take a *keyword condition*: a table of ``any`` (at least one
  appears), ``all`` (every one appears), ``none`` (none appears) and ``regex``
  (searched in the raw text, case-insensitive; compiled once at load). Keywords are
  case-insensitive whole words or phrases: text is cut into words (letters, digits,
  ``_``), so ``vpn`` matches "VPN down" and "vpn-gw" but not "vpnx", and the phrase
  ``"remote access"`` matches "Remote-Access" too. An absent label is empty text.
- ``source`` (email, alertmanager, grafana, pagerduty, generic, manual) and
  ``integration`` (names of webhook integrations): the signal's must be one of them.

Actions: ``category``, ``service``, ``impact`` and ``urgency`` (high | medium | low),
``group``, ``tags``, ``major``, ``security``. For each field the FIRST matching rule
that sets it wins; later matching rules only fill fields still unset. ``tags`` are
merged from every matching rule. A matching rule with ``stop = true`` ends the
evaluation (put specific rules with ``stop`` before general ones). Every
:class:`Decision` records which rule set each field (``reasons``), so the system can
explain itself.

Regexes run on RE2 (``google-re2``), a linear-time engine: no pattern an admin
writes can make a crafted subject or sender cost more than a pass over the text
(Python's ``re`` backtracks: ``^([a-z0-9]+[._-]?)+@x$`` takes seconds on a long
sender). RE2 has no backreferences or look-around, spells Python's ``\Z`` as
``\z``, and its ``\w``, ``\d`` and ``\b`` are ASCII (``\pL``, ``\pN`` for any
script); a pattern it cannot compile is refused at load, with RE2's reason.

Cost: the text is cut into words once per signal; rules are indexed by the words
their ``any``/``all`` conditions require, so only rules whose words occur (plus
rules with no such condition: regex-, label-absence-, source-only or catch-all
rules) are evaluated. Classification cost grows with the text, not with the
number of rules (``bench/classify.py``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import re2

from gateway.config.schema import KeyProblem, setting
from parsers.signal import Signal

LEVELS = ("high", "medium", "low")
SOURCES = ("email", "alertmanager", "grafana", "pagerduty", "generic", "manual")
# The fields a rule can set, in the order Decision explains them (tags are merged separately).
FIELDS = ("category", "service", "impact", "urgency", "group", "major", "security")
_TEXT_CONDITIONS = ("subject", "body", "text", "sender", "recipient")
_HAYSTACKS = {
    "subject": ("subject",),
    "body": ("body",),
    "text": ("subject", "body"),
    "sender": ("sender",),
    "recipient": ("recipient",),
}
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Cut text into lower-cased words, the way rules see it."""
    return _WORD.findall(text.casefold())


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Keywords:
    """A keyword condition: every part given must hold."""

    any: list[str] = setting(factory=list, help="Holds when at least one of these words or phrases appears.")
    all: list[str] = setting(factory=list, help="Holds when every one of these words or phrases appears.")
    none: list[str] = setting(factory=list, help="Holds when none of these words or phrases appears.")
    regex: str = setting(
        "", help="Regular expression (RE2 syntax, linear time) searched in the raw text (case-insensitive)."
    )


@dataclass(frozen=True)
class Rule:
    name: str = setting(help="Rule name (unique); decisions name the rule that made them.")
    description: str = setting("", help="What the rule is for.")
    subject: Keywords | None = setting(None, help="Condition on the subject (title) of the signal.")
    body: Keywords | None = setting(None, help="Condition on the body text of the signal.")
    text: Keywords | None = setting(None, help="Condition on the subject or the body (either may hold it).")
    sender: Keywords | None = setting(None, help="Condition on the reporter's name and address.")
    recipient: Keywords | None = setting(
        None, help="Condition on the address the signal came to (else its To and Cc addresses)."
    )
    labels: dict[str, Keywords] = setting(factory=dict, help="Conditions on labels: label name -> condition.")
    source: list[str] = setting(factory=list, help="The signal's source must be one of these.", choices=SOURCES)
    integration: list[str] = setting(factory=list, help="The webhook integration must be one of these names.")
    category: str = setting("", help="Category to set (it selects the procedure).")
    service: str = setting("", help="Affected service to set.")
    impact: str = setting("", help="Impact to set.", choices=LEVELS)
    urgency: str = setting("", help="Urgency to set.", choices=LEVELS)
    group: str = setting("", help="Resolver group to allocate to (a [[group]] name).")
    tags: list[str] = setting(factory=list, help="Tags to add (merged from every matching rule).")
    major: bool | None = setting(None, help="Mark (true) or explicitly not (false) a major incident.")
    security: bool | None = setting(None, help="Mark (true) or explicitly not (false) a security incident.")
    stop: bool = setting(False, help="When this rule matches, evaluate no later rule.")

    def sets(self) -> dict[str, object]:
        """The fields this rule sets, with their values (tags excluded)."""
        values = {f: getattr(self, f) for f in FIELDS}
        return {f: v for f, v in values.items() if v is not None and v != ""}


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """What the rules decided for one signal.

    ``reasons`` maps each field that a rule set to that rule's name; each tag
    appears as ``"tag:<tag>"``. ``matched`` names every matching rule, in order.
    """

    category: str | None = None
    service: str | None = None
    impact: str | None = None
    urgency: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    major: bool = False
    security: bool = False
    reasons: Mapping[str, str] = field(default_factory=dict)
    matched: tuple[str, ...] = ()

    def explain(self) -> list[str]:
        """One line per decided field: ``impact = 'high' (rule 'vpn')``."""
        lines = [f"{f} = {getattr(self, f)!r} (rule {self.reasons[f]!r})" for f in FIELDS if f in self.reasons]
        lines += [f"tag {t!r} (rule {self.reasons['tag:' + t]!r})" for t in self.tags]
        return lines or ["no rule matched"]


# ---------------------------------------------------------------- compiled form

Phrase = tuple[str, ...]


@dataclass(frozen=True)
class _Condition:
    haystacks: tuple[str, ...]
    any: tuple[Phrase, ...]
    all: tuple[Phrase, ...]
    none: tuple[Phrase, ...]
    regex: re2._Regexp | None


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    conditions: tuple[_Condition, ...]
    sources: frozenset[str]
    integrations: frozenset[str]
    sets: tuple[tuple[str, object], ...]


class _View:
    """One signal as rules see it: raw texts, cut into words once, on demand."""

    __slots__ = ("raw", "_tokens", "_sets", "_positions", "_encoded")

    def __init__(self, signal: Signal, recipient: str | None):
        self.raw = {
            "subject": signal.title or "",
            "body": signal.text or "",
            "sender": " ".join(p for p in (signal.reporter_name, signal.reporter_email) if p),
            "recipient": recipient if recipient is not None else " ".join((*signal.recipients, *signal.cc)),
        }
        for name, value in signal.labels.items():
            self.raw["label:" + name] = str(value)
        self._tokens: dict[str, list[str]] = {}
        self._sets: dict[str, set[str]] = {}
        self._positions: dict[str, dict[str, list[int]]] = {}
        self._encoded: dict[str, bytes] = {}

    def encoded(self, haystack: str) -> bytes:
        """The raw text as UTF-8 for RE2 (a lone surrogate becomes '?' instead of raising)."""
        found = self._encoded.get(haystack)
        if found is None:
            found = self._encoded[haystack] = self.raw.get(haystack, "").encode("utf-8", "replace")
        return found

    def tokens(self, haystack: str) -> list[str]:
        found = self._tokens.get(haystack)
        if found is None:
            found = self._tokens[haystack] = words(self.raw.get(haystack, ""))
        return found

    def token_set(self, haystack: str) -> set[str]:
        found = self._sets.get(haystack)
        if found is None:
            found = self._sets[haystack] = set(self.tokens(haystack))
        return found

    def has(self, haystack: str, phrase: Phrase) -> bool:
        if phrase[0] not in self.token_set(haystack):
            return False
        if len(phrase) == 1:
            return True
        positions = self._positions.get(haystack)
        if positions is None:
            positions = self._positions[haystack] = {}
            for i, token in enumerate(self.tokens(haystack)):
                positions.setdefault(token, []).append(i)
        tokens, n = self.tokens(haystack), len(phrase)
        return any(tuple(tokens[i : i + n]) == phrase for i in positions[phrase[0]])


def _holds(cond: _Condition, view: _View) -> bool:
    def present(phrase: Phrase) -> bool:
        return any(view.has(h, phrase) for h in cond.haystacks)

    if cond.any and not any(present(p) for p in cond.any):
        return False
    if not all(present(p) for p in cond.all):
        return False
    if any(present(p) for p in cond.none):
        return False
    return cond.regex is None or any(cond.regex.search(view.encoded(h)) is not None for h in cond.haystacks)


def _matches(c: _Compiled, signal: Signal, integration: str | None, view: _View) -> bool:
    if c.sources and signal.source not in c.sources:
        return False
    if c.integrations and integration not in c.integrations:
        return False
    return all(_holds(cond, view) for cond in c.conditions)


class RuleSet:
    """Compiled rules: build with :func:`compile_rules`, then :meth:`classify` signals."""

    def __init__(self, compiled: list[_Compiled], index: dict[str, dict[str, list[int]]], always: list[int]):
        self._rules = compiled
        self._index = index
        self._always = frozenset(always)
        self.warnings: list[str] = []

    def __len__(self) -> int:
        return len(self._rules)

    def classify(self, signal: Signal, *, recipient: str | None = None, integration: str | None = None) -> Decision:
        """Apply the rules to one signal (pure; the same input gives the same decision)."""
        view = _View(signal, recipient)
        candidates = set(self._always)
        for haystack, by_word in self._index.items():
            for token in view.token_set(haystack):
                hit = by_word.get(token)
                if hit:
                    candidates.update(hit)
        return self._decide(sorted(candidates), signal, integration, view)

    def _classify_every_rule(
        self, signal: Signal, *, recipient: str | None = None, integration: str | None = None
    ) -> Decision:
        # The unindexed reference: the index must never change a decision (tests and bench compare).
        return self._decide(range(len(self._rules)), signal, integration, _View(signal, recipient))

    def _decide(self, order, signal: Signal, integration: str | None, view: _View) -> Decision:
        values: dict[str, object] = {}
        reasons: dict[str, str] = {}
        tags: list[str] = []
        matched: list[str] = []
        for i in order:
            c = self._rules[i]
            if not _matches(c, signal, integration, view):
                continue
            name = c.rule.name
            matched.append(name)
            for f, value in c.sets:
                if f not in values:
                    values[f] = value
                    reasons[f] = name
            for tag in c.rule.tags:
                if "tag:" + tag not in reasons:
                    tags.append(tag)
                    reasons["tag:" + tag] = name
            if c.rule.stop:
                break
        return Decision(**values, tags=tuple(tags), reasons=MappingProxyType(reasons), matched=tuple(matched))


# ---------------------------------------------------------------- compiling


def _phrases(values: list[str], trail: tuple[str, ...], key: str) -> tuple[Phrase, ...]:
    out = []
    for i, value in enumerate(values):
        tokens = tuple(words(value))
        if not tokens:
            raise KeyProblem((*trail, f"{key}[{i}]"), f"{value!r} has no letters or digits to match")
        out.append(tokens)
    return tuple(out)


def _condition(kw: Keywords, haystacks: tuple[str, ...], trail: tuple[str, ...]) -> _Condition:
    if not (kw.any or kw.all or kw.none or kw.regex):
        raise KeyProblem(trail, "empty condition: give any, all, none or regex")
    regex = compile_regex(kw.regex, (*trail, "regex")) if kw.regex else None
    return _Condition(
        haystacks,
        _phrases(kw.any, trail, "any"),
        _phrases(kw.all, trail, "all"),
        _phrases(kw.none, trail, "none"),
        regex,
    )


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # RE2 would print its reason on stderr; it goes into the KeyProblem instead
    return options


_RE2_OPTIONS = _re2_options()
_RE2_HINT = "Inlet runs rule regexes on RE2 (linear time): no backreferences or look-around; write \\z for \\Z"


def compile_regex(pattern: str, trail: tuple[str, ...]) -> re2._Regexp:
    """Compile an admin-written pattern for RE2 (case-insensitive); KeyProblem naming the key and RE2's reason."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except (re2.error, TypeError, ValueError) as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise KeyProblem(trail, f"invalid regular expression {pattern!r}: {reason} ({_RE2_HINT})") from None


def _compile(rule: Rule) -> _Compiled:
    trail = (f"[[rule]] {rule.name!r}",)
    conditions = []
    for key in _TEXT_CONDITIONS:
        kw = getattr(rule, key)
        if kw is not None:
            conditions.append(_condition(kw, _HAYSTACKS[key], (*trail, key)))
    for label, kw in rule.labels.items():
        conditions.append(_condition(kw, ("label:" + label,), (*trail, "labels", label)))
    return _Compiled(
        rule,
        tuple(conditions),
        frozenset(rule.source),
        frozenset(rule.integration),
        tuple(rule.sets().items()),
    )


def _index_keys(c: _Compiled) -> list[tuple[str, str]] | None:
    """The fewest (haystack, word) pairs of which at least one must occur for the rule to match."""
    best: list[tuple[str, str]] | None = None
    for cond in c.conditions:
        if cond.all:
            # One required word is enough to key on; a longer word is likelier to be rare.
            word = max((p[0] for p in cond.all), key=len)
            keys = [(h, word) for h in cond.haystacks]
        elif cond.any:
            keys = sorted({(h, p[0]) for p in cond.any for h in cond.haystacks})
        else:
            continue
        if best is None or len(keys) < len(best):
            best = keys
    return best


def compile_rules(rules: list[Rule]) -> RuleSet:
    """Compile rules (regexes, keyword index) once; raise KeyProblem naming the bad key.

    ``config_from_dict`` turns the KeyProblem into a ConfigError naming the file.
    The returned set's ``warnings`` name rules that can never match or never act.
    """
    compiled = [_compile(r) for r in rules]
    index: dict[str, dict[str, list[int]]] = {}
    always = []
    for i, c in enumerate(compiled):
        keys = _index_keys(c)
        if keys is None:
            always.append(i)
            continue
        for haystack, word in keys:
            index.setdefault(haystack, {}).setdefault(word, []).append(i)
    ruleset = RuleSet(compiled, index, always)
    ruleset.warnings = _warnings(compiled)
    return ruleset


def _signature(c: _Compiled) -> tuple:
    """The rule's conditions in a comparable form (same signature: same signals match)."""

    def norm(cond: _Condition) -> tuple:
        return (
            cond.haystacks,
            frozenset(cond.any),
            frozenset(cond.all),
            frozenset(cond.none),
            cond.regex.pattern if cond.regex else None,
        )

    return (frozenset(norm(cond) for cond in c.conditions), c.sources, c.integrations)


def _warnings(compiled: list[_Compiled]) -> list[str]:
    out = []
    stoppers: dict[tuple, str] = {}  # signature of a stop rule -> its name
    catch_all_stop: str | None = None
    earlier: dict[tuple, list[_Compiled]] = {}
    for c in compiled:
        name = c.rule.name
        sig = _signature(c)
        if catch_all_stop is not None:
            out.append(f"rule {name!r} can never match: rule {catch_all_stop!r} matches everything and stops")
        elif sig in stoppers:
            out.append(f"rule {name!r} can never match: rule {stoppers[sig]!r} has the same conditions and stops")
        for key, cond in zip(_condition_keys(c.rule), c.conditions, strict=True):
            clash = (set(cond.any) | set(cond.all)) & set(cond.none)
            if not clash:
                continue
            shown = ", ".join(sorted(repr(" ".join(p)) for p in clash))
            if set(cond.all) & set(cond.none) or set(cond.any) <= set(cond.none):
                out.append(f"rule {name!r} can never match: {key} has {shown} both required and in 'none'")
            else:
                out.append(f"rule {name!r}: {key} has {shown} in both 'any' and 'none' (it can never help)")
        same = earlier.get(sig, [])
        set_before = {f for e in same for f, _ in e.sets}
        if same and c.sets and not c.rule.tags and not c.rule.stop and {f for f, _ in c.sets} <= set_before:
            out.append(
                f"rule {name!r} never decides anything: earlier rules with the same conditions "
                f"({', '.join(repr(e.rule.name) for e in same)}) set every field it sets"
            )
        if not c.sets and not c.rule.tags and not c.rule.stop:
            out.append(f"rule {name!r} sets nothing (no field, no tags, no stop)")
        earlier.setdefault(sig, []).append(c)
        if c.rule.stop:
            stoppers.setdefault(sig, name)
            if not c.conditions and not c.sources and not c.integrations and catch_all_stop is None:
                catch_all_stop = name
    return out


def _condition_keys(rule: Rule) -> list[str]:
    keys = [k for k in _TEXT_CONDITIONS if getattr(rule, k) is not None]
    return keys + [f"labels.{label}" for label in rule.labels]
