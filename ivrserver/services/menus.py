"""MenuRegistry: the live set of menus, replaced only by a fully valid new version.

`reload()` is the ONE reload path: SIGHUP, `ivrserver menus reload` (REST), the REST call and the
file watcher all call it. It reads and checks every menu file; if any has an error the live
version stays and the errors are returned (and logged). A call takes `registry.current` once at
its start and keeps that MenuVersion object to the end, so a reload never changes a running call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ivrserver.domain.menu import Issue, Menu, Resources, Severity
from ivrserver.files import menus as mf
from ivrserver.services.speech import SpeechRenderer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MenuVersion:
    version: str  # content hash of every menu file ("" for none loaded)
    loaded_at: float
    menus: Mapping[str, Menu] = field(default_factory=dict)
    warnings: tuple[Issue, ...] = ()

    def menu(self, name: str) -> Menu:
        """The menu `name`; KeyError when this version has no such menu."""
        return self.menus[name]


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    version: str  # the live version after the call
    changed: bool
    errors: tuple[Issue, ...] = ()
    warnings: tuple[Issue, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "version": self.version, "changed": self.changed,
                "errors": [i.as_dict() for i in self.errors], "warnings": [i.as_dict() for i in self.warnings]}


class MenuRegistry:
    def __init__(self, menus_dir: str | os.PathLike[str], *, resources: Resources | None = None,
                 clock: Callable[[], float] = time.time, speech: SpeechRenderer | None = None) -> None:
        """speech: renders text prompts at every reload (only what is not cached); None: text
        prompts load without audio (they are skipped on calls)."""
        self.dir = Path(menus_dir)
        self.resources = resources
        self.speech = speech
        self.clock = clock
        self._current = MenuVersion("", 0.0)
        self._lock = threading.Lock()
        self._seen: tuple[tuple[str, int, int], ...] = ()

    @property
    def current(self) -> MenuVersion:
        """The live version: take it once per call and keep it."""
        return self._current

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        try:
            files = mf.menu_files(self.dir)
        except OSError:
            return ()
        out = []
        for p in files:
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((p.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def reload(self) -> ReloadResult:
        """Read, check and (if everything is valid) publish the menus. Thread-safe, synchronous.

        Never raises: any failure while building the new version (RecursionError, MemoryError, a
        bug) rejects that version with an error and keeps the live one."""
        with self._lock:
            try:
                return self._reload()
            except Exception as exc:  # the live version must survive anything
                log.error("menu reload failed; version %s stays live", self._current.version or "<none>",
                          exc_info=True)
                error = Issue(str(self.dir), 1, 1, Severity.ERROR, "internal",
                              f"menus could not be loaded: {type(exc).__name__}", "the error is logged")
                return ReloadResult(False, self._current.version, False, (error,))

    def _reload(self) -> ReloadResult:
        fingerprint = self._fingerprint()  # before reading: a change during the read is seen later
        errors: list[Issue] = []
        warnings: list[Issue] = []
        menus: dict[str, Menu] = {}
        digest = hashlib.sha256()
        try:
            files = mf.menu_files(self.dir)
        except OSError as exc:
            files = []
            errors.append(Issue(str(self.dir), 1, 1, Severity.ERROR, "io",
                                f"cannot list menus: {exc.strerror}"))
        if not files and not errors:
            errors.append(Issue(str(self.dir), 1, 1, Severity.ERROR, "io", "no menu files (*.yaml)"))
        for path in files:
            with contextlib.suppress(OSError):  # load_menu reports it
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
            menu, issues = mf.load_menu(path, self.resources, self.speech)
            errors += [i for i in issues if i.severity is Severity.ERROR]
            warnings += [i for i in issues if i.severity is Severity.WARNING]
            if menu is not None:
                menus[menu.name] = menu
        version = digest.hexdigest()[:12]
        live = self._current
        if errors:
            for issue in errors:
                log.error("menu reload rejected: %s", issue.format())
            log.error("menu reload rejected (%d errors); version %s stays live", len(errors),
                      live.version or "<none>")
            return ReloadResult(False, live.version, False, tuple(errors), tuple(warnings))
        for issue in warnings:
            log.warning("menu lint: %s", issue.format())
        changed = version != live.version
        if changed:
            self._current = MenuVersion(version, self.clock(), menus, tuple(warnings))
            log.info("menus version %s live: %s", version, ", ".join(sorted(menus)))
        self._seen = fingerprint
        return ReloadResult(True, version, changed, (), tuple(warnings))

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever a menu file's mtime or size changes (or files appear/disappear).

        Runs until cancelled; owned by the app's task group. Polls mtimes: no new dependency.
        """
        seen = self._seen or self._fingerprint()
        while True:
            await asyncio.sleep(interval)
            now = await asyncio.to_thread(self._fingerprint)
            if now != seen:
                seen = now
                result = await asyncio.to_thread(self.reload)
                seen = self._seen if result.ok else now

