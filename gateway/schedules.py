"""On-call schedules: who is paged for a group at a given time.

A ``[[schedule]]`` is a list of layers, each a rotation of users handing over
daily or weekly at a local time in the schedule's time zone (optionally active
only within some hours of the day: a night layer over a day layer). The last
layer that has someone at a time wins; an override (a row: a user covers a
span, created in the UI, the API or the CLI) wins over every layer, the latest
created first. :func:`on_call` is the one answer to "who is on call for group
X (or schedule X) at time T"; everything else (paging, the group page,
``inlet oncall``) asks it.

Escalation steps and group channels name a schedule as ``schedule:NAME``:
``gateway.audiences.expand_targets`` turns that, through :func:`reach`, into
the on-call user's own channels (their email address and the Apprise URLs on
their user: ``User.channels``, set by themselves on their account page, by an
admin, or with ``inlet user channels``) at the moment of paging, and says who was paged so
the incident's event can record it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway import membership
from gateway.config.schema import KeyProblem, setting
from gateway.core.clock import iso
from gateway.core.errors import Forbidden, InletError, NotFound
from store.db import db
from store.models import OnCallOverride, User

PREFIX = "schedule:"
ROTATIONS = {"daily": 1, "weekly": 7}
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_MAX_STEPS = 100  # boundaries examined when looking for the next person (a long run of the same user)


@dataclass(frozen=True)
class Layer:
    users: list[str] = setting(help="User names in rotation order (each takes one turn of 'rotation').")
    start: str = setting(
        help="Date (YYYY-MM-DD) of the first hand-off to the first user; weekly turns hand over on its weekday."
    )
    rotation: str = setting("weekly", help="Length of a turn.", choices=tuple(ROTATIONS))
    handoff: str = setting("09:00", help="Local time (HH:MM, the schedule's timezone) at which a turn hands over.")
    hours: str = setting(
        "", help='Only active within these local hours, "HH:MM-HH:MM" (may wrap midnight); empty: all day.'
    )

    @property
    def handoff_time(self) -> time:
        return _parse_hhmm(self.handoff)

    @property
    def start_date(self) -> date:
        return date.fromisoformat(self.start)

    @property
    def window(self) -> tuple[time, time] | None:
        if not self.hours:
            return None
        start, _, end = self.hours.partition("-")
        return _parse_hhmm(start.strip()), _parse_hhmm(end.strip())


@dataclass(frozen=True)
class Schedule:
    name: str = setting(help="Schedule name: escalation steps and group channels page it as 'schedule:NAME'.")
    group: str = setting("", help="The [[group]] it covers: its agents may add overrides; `inlet oncall GROUP`.")
    timezone: str = setting("UTC", help="Time zone of the hand-off times and hours (IANA name, e.g. Europe/Berlin).")
    layer: list[Layer] = setting(factory=list, help="Rotations; a later layer wins where it has someone.")
    channels: dict[str, list[str]] = setting(
        factory=dict,
        help="Deprecated fallback: user name -> Apprise URLs, used only for a user with no channels of their own "
        "(set them on the user: account page, Users page, `inlet user channels`).",
    )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True)
class OnCall:
    """Who is on call: the user, the schedule, and why (``layer 2``, ``override #7``)."""

    schedule: str
    user: str
    source: str


def _parse_hhmm(text: str) -> time:
    match = _HHMM.fullmatch(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a time HH:MM")
    return time(int(match.group(1)), int(match.group(2)))


def check_schedules(config) -> None:
    """Validate ``[[schedule]]`` and every ``schedule:NAME`` reference; raises KeyProblem."""
    names = {s.name for s in config.schedule}
    groups = {g.name for g in config.group}
    for s in config.schedule:
        where = f"[[schedule]] {s.name!r}"
        try:
            s.zone  # noqa: B018 -- loads the zone now, so a wrong name is a load error
        except (ZoneInfoNotFoundError, ValueError):
            raise KeyProblem((where, "timezone"), f"unknown time zone {s.timezone!r}") from None
        if s.group and s.group not in groups:
            raise KeyProblem((where, "group"), f"no [[group]] named {s.group!r}")
        if not s.layer:
            raise KeyProblem((where, "layer"), "a schedule needs at least one [[schedule.layer]]")
        for i, layer in enumerate(s.layer):
            here = (where, f"layer[{i}]")
            if not layer.users:
                raise KeyProblem((*here, "users"), "needs at least one user name")
            for key in ("handoff", "start", "hours"):
                try:
                    getattr(layer, {"handoff": "handoff_time", "start": "start_date", "hours": "window"}[key])
                except ValueError as exc:
                    raise KeyProblem((*here, key), str(exc)) from None
        for user, urls in s.channels.items():
            for url in urls:
                if "://" not in url:
                    raise KeyProblem((where, "channels", user), f"{url!r} is not an Apprise URL")
    refs = [((f"[[group]] {g.name!r}", "channels"), t) for g in config.group for t in g.channels]
    refs += [((f"[[group]] {g.name!r}", "managers"), t) for g in config.group for t in g.managers]
    refs += [
        ((f"[[escalation]] {p.name!r}", f"steps[{i}]", "notify"), t)
        for p in config.escalation
        for i, step in enumerate(p.steps)
        for t in step.notify
    ]
    for trail, target in refs:
        if target.startswith(PREFIX) and target[len(PREFIX) :] not in names:
            raise KeyProblem(trail, f"no [[schedule]] named {target[len(PREFIX) :]!r}")


# ---------------------------------------------------------------- who is on call


def schedule_for(config, name: str) -> Schedule:
    """The schedule named ``name``, else the (first) schedule of the group ``name``; NotFound otherwise."""
    found = next((s for s in config.schedule if s.name == name), None)
    found = found or next((s for s in config.schedule if s.group and s.group == name), None)
    if found is None:
        raise NotFound(f"no [[schedule]] named {name!r} and none for a group of that name")
    return found


def on_call(config, name: str, at: datetime) -> OnCall | None:
    """Who is on call for group or schedule ``name`` at ``at`` (aware): the latest override covering
    ``at``, else the last layer that has someone then; None when nobody is (a layer's hours leave a gap)."""
    schedule = schedule_for(config, name)
    override = (
        OnCallOverride.select()
        .where(
            (OnCallOverride.schedule == schedule.name)
            & (OnCallOverride.starts_at <= at)
            & (OnCallOverride.ends_at > at)
        )
        .order_by(OnCallOverride.created_at.desc(), OnCallOverride.id.desc())
        .first()
    )
    if override is not None:
        return OnCall(schedule.name, override.user, f"override #{override.id}")
    for index in range(len(schedule.layer) - 1, -1, -1):
        user = _layer_user(schedule.layer[index], schedule.zone, at)
        if user is not None:
            return OnCall(schedule.name, user, f"layer {index + 1}")
    return None


def next_on_call(config, name: str, at: datetime) -> tuple[datetime, OnCall | None] | None:
    """When the on-call person next changes after ``at``, and to whom; None if not within 100 boundaries."""
    schedule = schedule_for(config, name)
    current = on_call(config, name, at)
    point = at
    for _ in range(_MAX_STEPS):
        point = _next_boundary(schedule, point)
        upcoming = on_call(config, name, point)
        if (upcoming and upcoming.user) != (current and current.user):
            return point, upcoming
    return None


def _shift_start(layer: Layer, zone: ZoneInfo, day: date) -> datetime:
    return datetime.combine(day, layer.handoff_time, tzinfo=zone).astimezone(UTC)


def _turn(layer: Layer, zone: ZoneInfo, at: datetime) -> tuple[int, date]:
    """The index of the turn ``at`` falls in and the local date its hand-off was on (DST-proof: instants compared)."""
    length = ROTATIONS[layer.rotation]
    day = at.astimezone(zone).date()
    offset = (day - layer.start_date).days
    start_day = day - timedelta(days=offset % length)
    if at < _shift_start(layer, zone, start_day):
        start_day -= timedelta(days=length)
    return (start_day - layer.start_date).days // length, start_day


def _in_window(layer: Layer, zone: ZoneInfo, at: datetime) -> bool:
    window = layer.window
    if window is None:
        return True
    local = at.astimezone(zone).time()
    start, end = window
    return start <= local < end if start < end else (local >= start or local < end)


def _layer_user(layer: Layer, zone: ZoneInfo, at: datetime) -> str | None:
    if not _in_window(layer, zone, at):
        return None
    index, _ = _turn(layer, zone, at)
    return layer.users[index % len(layer.users)]


def _next_boundary(schedule: Schedule, at: datetime) -> datetime:
    """The first instant after ``at`` at which a layer hands over, a layer's hours begin or end, or an override."""
    zone, candidates = schedule.zone, []
    for layer in schedule.layer:
        _, start_day = _turn(layer, zone, at)
        candidates.append(_shift_start(layer, zone, start_day + timedelta(days=ROTATIONS[layer.rotation])))
        if layer.window is not None:
            today = at.astimezone(zone).date()
            for day in (today, today + timedelta(days=1)):
                for edge in layer.window:
                    instant = datetime.combine(day, edge, tzinfo=zone).astimezone(UTC)
                    if instant > at:
                        candidates.append(instant)
    for field in (OnCallOverride.starts_at, OnCallOverride.ends_at):
        first = (
            OnCallOverride.select(field)
            .where((OnCallOverride.schedule == schedule.name) & (field > at))
            .order_by(field)
            .limit(1)
            .scalar()
        )
        if first is not None:
            candidates.append(first if first.tzinfo else first.replace(tzinfo=UTC))
    return min(candidates)


# ---------------------------------------------------------------- paging


def reach(config, name: str, at: datetime) -> tuple[OnCall | None, str, list[str]]:
    """Who schedule ``name`` pages at ``at``: (who, their email address or "", their own Apprise URLs —
    else, for a user with none, the schedule's deprecated ``channels`` entry for them). A disabled or
    unknown user is paged nowhere. ``gateway.audiences.expand_targets`` turns ``schedule:NAME`` into these."""
    who = on_call(config, name, at)
    if who is None:
        return None, "", []
    user = User.get_or_none((User.name == who.user) & (User.active == True))  # noqa: E712
    if user is None:
        return who, "", []
    return who, user.email, list(user.channels or schedule_for(config, name).channels.get(who.user, []))


# ---------------------------------------------------------------- overrides


def may_override(config, user: User, schedule: Schedule) -> bool:
    """Admins, and agents of the schedule's group, may add and remove its overrides."""
    if user.role == "admin":
        return True
    group = config.group_named(schedule.group) if schedule.group else None
    return user.role == "agent" and group is not None and membership.is_member(user.name, group.name)


def add_override(
    config, name: str, actor: User, user: str, starts: datetime, ends: datetime, now: datetime, reason: str = ""
) -> OnCallOverride:
    """``user`` covers schedule ``name`` from ``starts`` to ``ends`` (Forbidden unless :func:`may_override`)."""
    schedule = schedule_for(config, name)
    if not may_override(config, actor, schedule):
        raise Forbidden(f"{actor.name} may not change the schedule {schedule.name!r} (admins and its group's agents)")
    if starts.tzinfo is None or ends.tzinfo is None:
        raise InletError("override times need a time zone (e.g. 2026-03-29T09:00+02:00 or ...Z)")
    if ends <= starts:
        raise InletError("an override must end after it starts")
    if User.get_or_none((User.name == user) & (User.active == True)) is None:  # noqa: E712
        raise NotFound(f"no active user {user!r}")
    with db.atomic():
        return OnCallOverride.create(
            schedule=schedule.name,
            user=user,
            starts_at=starts,
            ends_at=ends,
            reason=reason[:500],
            created_by=actor.name,
            created_at=now,
        )


def remove_override(config, override_id: int, actor: User, name: str | None = None) -> None:
    """Delete an override (of group or schedule ``name`` when given); the same rights as adding one."""
    row = OnCallOverride.get_or_none(OnCallOverride.id == override_id)
    if row is None or (name is not None and row.schedule != schedule_for(config, name).name):
        raise NotFound(f"no override #{override_id}")
    if not may_override(config, actor, schedule_for(config, row.schedule)):
        raise Forbidden(f"{actor.name} may not change the schedule {row.schedule!r}")
    with db.atomic():
        row.delete_instance()


def overrides(name: str, since: datetime) -> list[OnCallOverride]:
    """The overrides of schedule ``name`` that end after ``since``, earliest first."""
    return list(
        OnCallOverride.select()
        .where((OnCallOverride.schedule == name) & (OnCallOverride.ends_at > since))
        .order_by(OnCallOverride.starts_at, OnCallOverride.id)
    )


def parse_time(text: str, zone: ZoneInfo | None = None) -> datetime:
    """An ISO 8601 time; without an offset it is read in ``zone`` (else UTC)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InletError(f"{text!r} is not a time: use ISO 8601, e.g. 2026-03-29T09:00 or 2026-03-29T07:00Z") from None
    if not 1971 <= value.year <= 9000:  # keeps every turn and boundary computed from it representable
        raise InletError(f"{text!r} is out of range: use a year between 1971 and 9000")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone or UTC)
    return value.astimezone(UTC)


def summary(config, name: str, at: datetime) -> dict:
    """Now and next on call for group or schedule ``name`` (the group page, the API, ``inlet oncall``)."""
    schedule = schedule_for(config, name)
    now = on_call(config, name, at)
    upcoming = next_on_call(config, name, at)
    return {
        "schedule": schedule.name,
        "group": schedule.group,
        "timezone": schedule.timezone,
        "at": iso(at),
        "now": {"user": now.user, "source": now.source} if now else None,
        "next": ({"user": upcoming[1].user if upcoming[1] else None, "from": iso(upcoming[0])} if upcoming else None),
    }
