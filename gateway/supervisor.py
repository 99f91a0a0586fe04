"""``inlet serve``: a small supervisor that runs each role in a process of its own (DESIGN.md §6).

In the spirit of Postfix's ``master``: the supervisor does no work itself. It
starts one process per role group — the listeners (web and SMTP share one: both
only store and answer; with ``[web] processes`` over 1, that many web processes
share the port and SMTP has one of its own), the IMAP pollers, ``[serve] workers`` pipeline workers,
outbox delivery, timers — each as ``inlet serve --only ROLES --child``, and then:

- restarts one that dies, after a wait that doubles with each quick death;
- stops a pipeline worker that spends longer than ``[serve] step_time_limit`` on
  one Inbound (each worker says which Inbound it has in hand over a pipe), and
  starts a new one: the attempt was counted when the row was taken, so an input
  that always pins a worker is quarantined after ``[serve] max_attempts``;
- forwards SIGHUP (after checking the file itself) and stops them all on
  SIGTERM/SIGINT, killing what has not stopped after ``[serve] shutdown_timeout``.

A listener never shares an interpreter with the pipeline, so neither a hostile
message nor a catastrophic rule pattern holding a worker's interpreter can keep
SMTP or webhooks from answering. Roles wake each other through the store
(store/wakeup.py), not through the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.loader import Config
from gateway.core.errors import ConfigError, InletError
from gateway.core.private_files import write_private
from gateway.service import PID_FILE, reloadable

log = logging.getLogger("inlet.supervisor")

PR_SET_PDEATHSIG = 1  # prctl(2)
BACKGROUND_NICE = 5  # scheduling priority of the roles behind intake (see _background)
QUICK_DEATH = 30.0  # seconds: a process that dies sooner than this waits longer before each restart
START_TIMEOUT = 60.0  # seconds for every role process to start, at the supervisor's own start


@dataclass(frozen=True)
class Plan:
    """One role process: its name and the roles it runs."""

    name: str
    roles: tuple[str, ...]

    @property
    def pipeline(self) -> bool:
        return "worker" in self.roles


def plan(config: Config, roles: set[str]) -> list[Plan]:
    """The role processes for ``roles`` (all by default): the map of what ``inlet serve`` runs."""
    plans = []
    listeners = tuple(r for r in ("web", "smtp") if r in roles and (r != "smtp" or config.smtp.enabled))
    web = config.web.processes
    if "web" in listeners and web > 1:  # web processes share the port (SO_REUSEPORT); SMTP keeps its own
        if config.web.port == 0:
            raise ConfigError(f"[web] processes = {web} needs a fixed [web] port (0 would give each its own)")
        plans += [Plan(f"web-{n}", ("web",)) for n in range(1, web + 1)]
        listeners = tuple(r for r in listeners if r != "web")
    if listeners:
        plans.append(Plan("listeners", listeners))
    if "imap" in roles and config.mailbox:
        plans.append(Plan("imap", ("imap",)))
    if "worker" in roles:
        count = config.serve.workers
        plans += [Plan(f"worker-{n}" if count > 1 else "worker", ("worker",)) for n in range(1, count + 1)]
    for role in ("notify", "timers"):
        if role in roles:
            plans.append(Plan(role, (role,)))
    return plans


@dataclass
class Child:
    """A running (or waiting to restart) role process."""

    plan: Plan
    proc: subprocess.Popen | None = None
    status: int | None = None  # read end of the pipe the process reports on
    buffer: bytes = b""
    started: float = 0.0
    ready: bool = False
    busy: tuple[int, float] | None = None  # (inbound id, since) while a pipeline run is in hand
    quick_deaths: int = 0
    restart_at: float | None = None
    overran: bool = False  # stopped by us for overrunning: restart at once
    history: list[str] = field(default_factory=list)


class Supervisor:
    """Starts, watches, restarts and stops the role processes of one configuration."""

    def __init__(self, config: Config, roles: set[str]):
        self.config = config
        self.children = [Child(p) for p in plan(config, roles)]
        if not self.children:
            raise ConfigError(f"--only {','.join(sorted(roles))}: nothing to run with this configuration")
        self._stopping = False
        self._reload = False
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)

    # ------------------------------------------------------------ the loop

    def run(self) -> int:
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD)
        previous = {s: signal.signal(s, self._on_signal) for s in handled}
        old_wakeup = signal.set_wakeup_fd(self._signal_w)
        pid_file = Path(self.config.inlet.data_dir) / PID_FILE
        try:
            for child in self.children:
                self._spawn(child)
            if not self._wait_until_started():
                return 1
            write_private(pid_file, f"{os.getpid()}\n".encode())
            if not self._stopping:
                print("inlet: running; stop with Ctrl-C (SIGINT) or SIGTERM; reload rules with SIGHUP", flush=True)
            while not self._stopping:
                self._turn(self._next_timeout())
            return 0
        finally:
            print("inlet: stopping", flush=True)
            self._stop_all()
            signal.set_wakeup_fd(old_wakeup)
            for s, handler in previous.items():
                signal.signal(s, handler)
            pid_file.unlink(missing_ok=True)
            os.close(self._signal_r)
            os.close(self._signal_w)
            print("inlet: stopped", flush=True)

    def _wait_until_started(self) -> bool:
        """Every process has said it started; False (after saying why) when one died first."""
        deadline = time.monotonic() + START_TIMEOUT
        while not all(c.ready for c in self.children):
            if self._stopping:  # told to stop while starting: a clean stop all the same
                return True
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None and not child.ready:
                    self._close_status(child)
                    print(
                        f"inlet: error: the {child.plan.name} process did not start (exit code "
                        f"{child.proc.returncode}); see its message above",
                        file=sys.stderr,
                        flush=True,
                    )
                    return False
            if time.monotonic() > deadline:
                print(f"inlet: error: role processes did not start within {START_TIMEOUT:.0f}s", file=sys.stderr)
                return False
            self._read_signals_and_status(0.1)
        return True

    def _turn(self, timeout: float) -> None:
        self._read_signals_and_status(timeout)
        now = time.monotonic()
        self._reap(now)
        self._stop_overruns(now)
        for child in self.children:
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
        if self._reload:
            self._reload = False
            self._forward_reload()

    def _next_timeout(self) -> float:
        timeout = 1.0
        now = time.monotonic()
        limit = self.config.serve.step_time_limit.total_seconds()
        for child in self.children:
            if child.restart_at is not None and child.proc is None:
                timeout = min(timeout, max(0.0, child.restart_at - now))
            if child.busy is not None:
                timeout = min(timeout, max(0.0, child.busy[1] + limit - now))
        return max(timeout, 0.01)

    def _read_signals_and_status(self, timeout: float) -> None:
        fds = [self._signal_r] + [c.status for c in self.children if c.status is not None]
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if self._signal_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._signal_r, 512):
                    pass
        for child in self.children:
            if child.status is not None and child.status in readable:
                self._read_status(child)

    def _read_status(self, child: Child) -> None:
        try:
            data = os.read(child.status, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the process closed its end: it is exiting; _reap collects it
            self._close_status(child)
            return
        child.buffer += data
        *lines, child.buffer = child.buffer.split(b"\n")
        now = time.monotonic()
        for line in lines:
            if line == b"R":
                child.ready = True
                if len(child.history) > 1:  # a restart (history holds every start): say it where the first was said
                    print(f"inlet: {child.plan.name} running again as pid {child.proc.pid}", flush=True)
            elif line.startswith(b"B "):
                child.busy = (int(line[2:]), now)
            elif line == b"I":
                child.busy = None

    def _close_status(self, child: Child) -> None:
        if child.status is not None:
            os.close(child.status)
            child.status = None

    # ------------------------------------------------------------ processes

    def _spawn(self, child: Child) -> None:
        status_r, status_w = os.pipe()
        os.set_blocking(status_r, False)
        command = [
            sys.executable,
            "-m",
            "gateway.cli.main",
            "-c",
            str(self.config.path),
            "serve",
            "--only",
            ",".join(child.plan.roles),
            "--child",
            str(status_w),
        ]
        try:
            listener = bool({"web", "smtp", "imap"} & set(child.plan.roles))
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                pass_fds=(status_w,),
                preexec_fn=functools.partial(_die_with_supervisor if listener else _background, os.getpid()),
            )
        except OSError as exc:
            os.close(status_r)
            os.close(status_w)
            log.error("cannot start the %s process: %s", child.plan.name, exc)
            self._schedule_restart(child, time.monotonic(), quick=True)
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(status_w)
        child.proc, child.status, child.buffer = proc, status_r, b""
        child.started, child.ready, child.busy, child.restart_at, child.overran = (
            time.monotonic(),
            False,
            None,
            None,
            False,
        )
        if not child.history:
            print(f"inlet: {child.plan.name} ({', '.join(child.plan.roles)}) started as pid {proc.pid}", flush=True)
        child.history.append(f"pid {proc.pid}")

    def _reap(self, now: float) -> None:
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            pid = child.proc.pid
            self._close_status(child)
            child.proc = None
            if self._stopping:
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            if child.overran:
                log.warning("%s (pid %s) stopped; starting a new one", child.plan.name, pid)
                self._schedule_restart(child, now, quick=False, at_once=True)
                continue
            quick = now - child.started < QUICK_DEATH
            delay = self._schedule_restart(child, now, quick=quick)
            log.error("%s (pid %s) %s; restarting it in %.1fs", child.plan.name, pid, how, delay)
            if child.busy is not None:
                log.error("%s had inbound %s in hand: it is retried (attempts count)", child.plan.name, child.busy[0])

    def _schedule_restart(self, child: Child, now: float, *, quick: bool, at_once: bool = False) -> float:
        serve = self.config.serve
        child.quick_deaths = child.quick_deaths + 1 if quick else 0
        if at_once:
            delay = 0.0
        else:
            base = serve.restart_backoff.total_seconds() * 2 ** max(0, child.quick_deaths - 1)
            delay = min(base, serve.restart_backoff_max.total_seconds())
        child.restart_at = now + delay
        child.busy = None
        return delay

    def _stop_overruns(self, now: float) -> None:
        limit = self.config.serve.step_time_limit.total_seconds()
        for child in self.children:
            if child.proc is None or child.busy is None or child.overran:
                continue
            inbound_id, since = child.busy
            if now - since > limit:
                # A pinned interpreter cannot be interrupted from inside (a regex holds the GIL): stop the
                # process. Its attempt at the row was committed before the run began.
                log.error(
                    "%s (pid %s) spent more than %gs on inbound %s: stopping it ([serve] step_time_limit)",
                    child.plan.name,
                    child.proc.pid,
                    limit,
                    inbound_id,
                )
                child.overran = True
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()

    def _stop_all(self) -> None:
        """SIGTERM to every process, then wait; SIGKILL what is left after [serve] shutdown_timeout."""
        self._stopping = True
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.proc.terminate()
        deadline = time.monotonic() + self.config.serve.shutdown_timeout.total_seconds()
        for child in running:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s (pid %s) did not stop in time: killing it", child.plan.name, child.proc.pid)
                child.proc.kill()
                child.proc.wait()
        for child in self.children:
            self._close_status(child)
            child.proc = None

    # ------------------------------------------------------------ signals

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        elif signum in (signal.SIGINT, signal.SIGTERM):
            self._stopping = True
        # SIGCHLD: the wakeup fd has woken the loop, which reaps

    def _forward_reload(self) -> None:
        try:
            new = reloadable(self.config)
        except (ConfigError, InletError) as exc:
            log.error("reload refused, the running configuration stays: %s", exc)
            print(f"inlet: reload refused, the running configuration stays: {exc}", flush=True)
            return
        self.config = new
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGHUP)
        print(f"inlet: reloaded configuration ({len(new.rule)} rules, {len(new.group)} groups)", flush=True)


def _die_with_supervisor(supervisor: int) -> None:
    """In the new process, before it runs Inlet: the kernel kills it when the supervisor (pid
    ``supervisor``) dies; if it died already, between the fork and here, the process ends at once
    (the death signal is only for a parent that dies later): no orphan holds the database's locks.

    A role process also stops when it sees its parent gone, but a pinned one (a pattern holding its
    interpreter lock) never looks. The supervisor runs no threads, so a preexec function is safe here.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent check in the role process is what remains
        pass
    if os.getppid() != supervisor:
        os._exit(1)


def _background(supervisor: int) -> None:
    """A role that works behind intake (pipeline, outbox, timers): the kernel gives intake the CPU first.

    What the in-process worker did by waiting while intake had work in hand, the scheduler now does
    across processes: a burst is acknowledged first and applied right after; idle CPU is used in full.
    """
    _die_with_supervisor(supervisor)
    os.nice(BACKGROUND_NICE)
