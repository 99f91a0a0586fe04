"""The one error hierarchy of Inlet.

Every error a person can act on derives from :class:`InletError` and carries a
message that says what is wrong and how to fix it. This module imports nothing,
so the pure packages (``parsers/``) may use it too.
"""


class InletError(Exception):
    """Base of every error Inlet raises on purpose."""


class ConfigError(InletError):
    """The configuration file is missing, unreadable or invalid."""


class ParseError(InletError):
    """An input could not be turned into signals."""


class StoreUnavailable(InletError):
    """The database cannot be reached or refused the write."""


class SchemaOutdated(InletError):
    """The database schema is older (or newer) than this version of Inlet."""


class NotFound(InletError):
    """A reference, user or row does not exist."""


class NoSuchIncident(NotFound):
    """No incident with this reference — or one the actor may not see (the same answer for both)."""


class Forbidden(InletError):
    """The actor may see this incident but not change it."""


class NotAssignable(InletError):
    """The user may not work this incident (a viewer, disabled, not in its group): it cannot be theirs."""


class Conflict(InletError):
    """The thing to create exists already."""


class TransitionError(InletError):
    """A lifecycle action is not allowed from the incident's current state."""

    def __init__(self, ref: str, action: str, current: str, reason: str):
        self.ref, self.action, self.current, self.reason = ref, action, current, reason
        # the status as a word (notifiers.words.label; this module imports nothing)
        super().__init__(f"{ref}: cannot {action} from '{current.replace('_', ' ')}': {reason}")
