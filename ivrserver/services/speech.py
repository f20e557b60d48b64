"""Text to audio, offline: the synthesizer command, the prompt cache and menu rendering.

A menu version's text prompts are rendered when it is checked or loaded (`SpeechRenderer.
render_menu`), never on a call's path: each (text, language, voice, synthesizer) is one file
`tts-<sha256 prefix>.sln` in the cache directory, so a reload renders only texts that changed,
and a deleted file is simply rendered again at the next check or load. A failed synthesis is an
error of that menu file (the live version stays).

Format: 8 kHz 16-bit signed-linear `.sln`, Asterisk's native format: no transcoding for the
telephone codecs (ulaw/alaw/gsm are 8 kHz; Asterisk transcodes slin to them with its cheapest
paths), no container to parse, and the duration is the size / 16,000. 16 kHz `.sln16` would only
help wideband (G.722) callers and doubles the disk; espeak's 22 kHz output has nothing above 4 kHz
a narrowband caller could hear.

The synthesizer is a setting (a command template, `prompts.synthesizer`), followed by a
conversion (`prompts.convert`, sox by default). Both run as asyncio subprocesses without a shell:
the template is split once (shlex) and `{voice} {wav} {text_file} {out}` are replaced inside
single arguments; the text itself reaches the synthesizer only through a file (`{text_file}`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ivrserver.domain import menu as m
from ivrserver.domain import speech

log = logging.getLogger(__name__)

EXTENSION = "sln"
BYTES_PER_SECOND = 16000.0  # 8 kHz × 16 bit mono
PLACEHOLDERS = frozenset({"voice", "wav", "text_file", "out"})
INSTALL_HINT = "install it: apt-get install espeak-ng sox (or set prompts.synthesizer / prompts.convert)"
SYNTHESIS_TIMEOUT = 30.0
T = TypeVar("T")


class SynthesisError(RuntimeError):
    """The synthesizer or the conversion failed; the message is safe to show (no text echoed)."""


# ---------------------------------------------------------------------------------------------
# Settings checks (called by config.py)


def _template(value: str, required: Iterable[str]) -> list[str]:
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot be split into arguments: {exc}") from exc
    if not argv:
        raise ValueError("is empty")
    import string
    used: set[str] = set()
    for arg in argv:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(arg) if name is not None}
        except ValueError as exc:
            raise ValueError(f"argument {arg!r}: {exc}") from exc
        unknown = names - PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; allowed: "
                             + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)))
        used |= names
    missing = [p for p in required if p not in used]
    if missing:
        raise ValueError("must use " + ", ".join(f"{{{p}}}" for p in missing))
    return argv


def check_synthesizer(value: str) -> None:
    _template(value, ("voice", "wav", "text_file"))


def check_convert(value: str) -> None:
    _template(value, ("wav", "out"))


def parse_voices(value: str) -> dict[str, str]:
    """'zh=cmn,en=en-us' → {'zh': 'cmn', 'en': 'en-us'}; ValueError when malformed."""
    voices: dict[str, str] = {}
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        lang, sep, voice = (x.strip() for x in item.partition("="))
        if not sep or not m.LANGUAGE_RE.match(lang) or not voice or not all(
                c.isalnum() or c in "-_+." for c in voice):
            raise ValueError(f"expected language=voice pairs such as zh=cmn,en=en-us, got {item!r}")
        voices[lang] = voice
    return voices


def check_voices(value: str) -> None:
    parse_voices(value)


# ---------------------------------------------------------------------------------------------
# Synthesizer


@dataclass(frozen=True)
class Synthesizer:
    synthesizer: str
    convert: str
    timeout: float = SYNTHESIS_TIMEOUT

    @property
    def identity(self) -> str:
        """Part of every cache name: another engine or conversion renders new files."""
        return f"{self.synthesizer}\n{self.convert}"

    def missing_programs(self) -> list[str]:
        out = []
        for template in (self.synthesizer, self.convert):
            program = shlex.split(template)[0]
            if shutil.which(program) is None:
                out.append(program)
        return out

    async def render(self, text: str, voice: str, out: Path) -> None:
        """Synthesize `text` with `voice` into `out` (.sln), atomically: a reader never sees a part."""
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".render-", dir=out.parent) as tmp:
            text_file = Path(tmp) / "text.txt"
            wav = Path(tmp) / "speech.wav"
            part = Path(tmp) / f"out.{EXTENSION}"
            text_file.write_text(text + "\n", encoding="utf-8")
            values = {"voice": voice, "wav": str(wav), "text_file": str(text_file), "out": str(part)}
            await self._run(self.synthesizer, values, "synthesizer")
            await self._run(self.convert, values, "conversion")
            if not part.is_file() or part.stat().st_size == 0:
                raise SynthesisError("the conversion wrote no audio")
            os.replace(part, out)

    async def _run(self, template: str, values: Mapping[str, str], what: str) -> None:
        argv = [arg.format(**values) for arg in shlex.split(template)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise SynthesisError(f"{what} {argv[0]!r} cannot run: {exc.strerror}; {INSTALL_HINT}") from exc
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise SynthesisError(f"{what} {argv[0]!r} took longer than {self.timeout:g} s") from None
        if proc.returncode != 0:
            first = next((ln for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()), "")
            raise SynthesisError(f"{what} {argv[0]!r} failed (exit {proc.returncode}): {first[:200]}")


# ---------------------------------------------------------------------------------------------
# Cache


@dataclass(frozen=True)
class Clip:
    name: str  # file stem, e.g. tts-3f2a...
    path: Path  # where ivrserver wrote it
    sound: str  # what STREAM FILE takes
    seconds: float


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end from synchronous code: here when no loop runs in this thread (a
    worker thread, the CLI), else in a short-lived thread with its own loop (the server's start),
    so the subprocesses never run on — or block — another loop's thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="speech") as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class SpeechRenderer:
    """Renders texts into the cache and tells what Asterisk should stream for each."""

    synthesizer: Synthesizer
    voices: Mapping[str, str]
    cache_dir: Path
    asterisk_dir: str = ""  # prefix of the names given to STREAM FILE ('' → absolute cache_dir)
    sounds_dir: Path | None = None  # recorded files that win over text (sounds/<lang>/<name>.*)
    concurrency: int = 2
    rendered: list[str] = field(default_factory=list)  # names rendered (not found in the cache), in order
    # renders in progress, by clip name: a second request for the same text waits for the first
    # (a resolve schedules notices many at once, all with one message)
    _inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_settings(cls, prompts: Any, sounds_dir: str | None) -> SpeechRenderer:
        """From the `prompts` settings section and asterisk.sounds_dir (None: no Asterisk sounds)."""
        sounds = Path(sounds_dir) if sounds_dir and Path(sounds_dir).is_dir() else None
        if prompts.cache_dir:
            cache = Path(prompts.cache_dir).expanduser()
        elif sounds is not None:
            cache = sounds / "ivrserver"
        else:
            base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
            cache = base / "ivrserver" / "prompts"
        prefix = prompts.asterisk_dir.rstrip("/")
        if not prefix:
            if sounds is not None and cache.resolve().is_relative_to(sounds.resolve()):
                prefix = cache.resolve().relative_to(sounds.resolve()).as_posix()
            else:
                prefix = str(cache.resolve())
        return cls(Synthesizer(prompts.synthesizer, prompts.convert), parse_voices(prompts.voices), cache,
                   prefix, sounds, prompts.concurrency)

    def sound_for(self, name: str) -> str:
        return f"{self.asterisk_dir}/{name}" if self.asterisk_dir else str(self.cache_dir / name)

    def path_for(self, name: str) -> Path:
        return self.cache_dir / f"{name}.{EXTENSION}"

    def recorded(self, name: str, language: str) -> str:
        """The recorded sound `name` in `language`'s sounds directory, as STREAM FILE takes it
        (relative to the sounds directory: '<lang>/<name>'), or ''."""
        if not name or self.sounds_dir is None:
            return ""
        folder = self.sounds_dir / language / Path(name).parent
        stem = Path(name).name
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                if entry.name.startswith(stem + ".") and entry.is_file():
                    return f"{language}/{name}"
        return ""

    async def clip(self, text: str, language: str, *, prefix: str = speech.CLIP_PREFIX,
                   semaphore: asyncio.Semaphore | None = None) -> Clip:
        """The clip of `text` in `language`, rendered unless the cache has it. Raises
        SynthesisError (also for a language without a voice)."""
        voice = self.voices.get(language)
        if voice is None:
            raise SynthesisError(f"no voice for language {language!r} (prompts.voices has "
                                 f"{', '.join(self.voices) or 'none'})")
        name = speech.clip_name(text, language, voice, self.synthesizer.identity, prefix)
        path = self.path_for(name)
        size = _size(path)
        if not size:
            pending = self._inflight.get(name)
            if pending is None or pending.get_loop() is not asyncio.get_running_loop():
                pending = asyncio.create_task(self._render(text, voice, name, semaphore))
                self._inflight[name] = pending
                pending.add_done_callback(lambda task: self._render_done(name, task))
            await asyncio.shield(pending)  # one waiter cancelled does not cancel it for the others
            size = _size(path)
        return Clip(name, path, self.sound_for(name), size / BYTES_PER_SECOND)

    async def _render(self, text: str, voice: str, name: str, semaphore: asyncio.Semaphore | None) -> None:
        path = self.path_for(name)
        async with semaphore or asyncio.Semaphore(1):
            if not _size(path):  # rendered meanwhile by another task sharing the semaphore
                await self.synthesizer.render(text, voice, path)
                self.rendered.append(name)

    def _render_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._inflight.get(name) is task:
            del self._inflight[name]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter got it already (or there was none left)

    # -- menus ----------------------------------------------------------------------------

    def render_menu(self, menu: m.Menu, src: m.Source) -> tuple[dict[tuple[str, str], str],
                                                                  dict[tuple[str, str], float], list[m.Issue]]:
        """Synchronous `render_menu_async` (menu checks and reloads run in worker threads)."""
        return run_sync(self.render_menu_async(menu, src))

    async def render_menu_async(self, menu: m.Menu, src: m.Source
                                ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], float], list[m.Issue]]:
        """(clips, seconds, issues) for every text prompt and the number words the menu says."""
        issues: list[m.Issue] = []
        clips: dict[tuple[str, str], str] = {}
        seconds: dict[tuple[str, str], float] = {}
        jobs: dict[tuple[str, str], m.TreePath] = {}

        def error(path: m.TreePath, code: str, message: str, hint: str = "", *, key: bool = False) -> None:
            pos = src.at(path, key=key)
            issues.append(m.Issue(src.file, pos.line, pos.column, m.Severity.ERROR, code, message, hint))

        for path, prompt in m.text_prompts(menu):
            for lang, text in prompt.variants:
                where = (*path, "text", lang) if ((*path, "text", lang) in src.values) else (*path, "text")
                recorded = self.recorded(prompt.name, lang)
                if recorded:
                    clips[(text, lang)] = recorded
                elif lang not in self.voices:
                    error(where, "unknown-language", f"{m.dotted(path)}: no voice for language '{lang}'",
                          m.did_you_mean(lang, self.voices) + "; voices come from prompts.voices",
                          key=where[-1] == lang)
                else:
                    jobs.setdefault((text, lang), path)
        kinds = m.say_kinds(menu)
        for lang in m.languages(menu):
            words = speech.vocabulary(lang, kinds)
            if words and lang not in self.voices:
                if lang.split("_")[0] in speech.WORDS_LANGUAGES:
                    error(("language",) if lang == menu.language else ("nodes",), "unknown-language",
                          f"numbers in '{lang}' are synthesized, but prompts.voices has no voice for it",
                          "add one, e.g. prompts.voices: zh=cmn,en=en-us")
                continue
            for word in words:
                jobs.setdefault((word, lang), ("language",))
        if not jobs or issues:
            return clips, seconds, issues
        missing = self.synthesizer.missing_programs()
        if missing:
            first = next(iter(jobs.values()))
            error(first, "synthesizer", f"the synthesizer {', '.join(missing)} is not installed", INSTALL_HINT)
            return clips, seconds, issues
        semaphore = asyncio.Semaphore(self.concurrency)
        keys = list(jobs)
        results = await asyncio.gather(*(self.clip(text, lang, semaphore=semaphore) for text, lang in keys),
                                       return_exceptions=True)
        voice_errors: set[str] = set()
        for (text, lang), result in zip(keys, results, strict=True):
            if isinstance(result, SynthesisError):
                if lang in voice_errors:
                    continue
                voice_errors.add(lang)
                hint = (f"check the voice '{self.voices[lang]}' (espeak-ng --voices) and prompts.synthesizer"
                        if "voice" in str(result).lower() or "exit" in str(result) else INSTALL_HINT)
                error(jobs[(text, lang)], "synthesis", f"{m.dotted(jobs[(text, lang)])}: could not synthesize "
                                                       f"'{lang}' text: {result}", hint)
            elif isinstance(result, BaseException):
                raise result
            else:
                clips[(text, lang)] = result.sound
                seconds[(text, lang)] = result.seconds
        return clips, seconds, issues


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
