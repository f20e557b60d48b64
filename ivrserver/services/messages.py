"""Spoken messages for outbound calls (notices, reminders): rendered ahead of the dial time.

```
messages = MessageService(renderer)
audio = await messages.render("您的工单{case}已处理完毕：{result}", {"case": "1024", "result": "已修复"}, "zh")
# store audio.sound with the scheduled call; at dial time the dialplan/AGI streams it
removed = await messages.cleanup(referenced={a.name for a in still_scheduled})
```

Audio is cached by content: the same rendered text in the same language and voice is one file
(`msg-<sha256 prefix>.sln`), rendered once however many calls carry it. `cleanup()` removes the
message files no scheduled call references any more; the caller passes the references (e.g. the
`audio` of every callback/notice still due in the scheduler's store), and files younger than
`grace` seconds are kept, so a message rendered for a call that is being scheduled right now is
never deleted under it. Menu clips (`tts-…`) are never touched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from ivrserver.domain import speech
from ivrserver.services.speech import EXTENSION, SpeechRenderer

DEFAULT_GRACE = 3600.0


@dataclass(frozen=True)
class MessageAudio:
    name: str  # msg-<hash>: what a scheduled call stores as its reference
    sound: str  # what STREAM FILE / Playback take
    seconds: float
    text: str  # the rendered text (with the customer's values): keep it out of logs


class MessageService:
    def __init__(self, renderer: SpeechRenderer, *, clock: Callable[[], float] = time.time) -> None:
        self.renderer = renderer
        self.clock = clock

    async def render(self, template: str | speech.MessageTemplate, values: Mapping[str, object],
                     language: str) -> MessageAudio:
        """Render the template with these values to audio (cached). Raises speech.TextError for a
        malformed template or a bad value, SynthesisError when the synthesizer fails."""
        parsed = template if isinstance(template, speech.MessageTemplate) else speech.MessageTemplate.parse(template)
        text = parsed.render(values)
        clip = await self.renderer.clip(text, language, prefix=speech.MESSAGE_PREFIX)
        return MessageAudio(clip.name, clip.sound, clip.seconds, text)

    async def cleanup(self, referenced: Collection[str], *, grace: float = DEFAULT_GRACE) -> list[str]:
        """Delete message files that no name in `referenced` (MessageAudio.name) keeps and that are
        older than `grace` seconds; the names removed."""
        return await asyncio.to_thread(self._cleanup, frozenset(referenced), grace)

    def _cleanup(self, referenced: frozenset[str], grace: float) -> list[str]:
        removed: list[str] = []
        cutoff = self.clock() - grace
        try:
            entries = list(self.renderer.cache_dir.iterdir())
        except FileNotFoundError:
            return removed
        for path in entries:
            name, _, ext = path.name.partition(".")
            if not name.startswith(speech.MESSAGE_PREFIX) or ext != EXTENSION or name in referenced:
                continue
            try:
                if path.stat().st_mtime > cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(name)
        return sorted(removed)
