"""The console chat adapter: commands on stdin, threads, DMs and replies as plain text on stdout.

It is the embedded default when no Discord or Slack token is configured, and what `paperboy chat` uses.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import TextIO

from bot.commands import parse_line
from bot.models import ChannelRef, Command, Delivery, Reply, UserRef
from bot.ports import CommandService, SendOutcome

CONSOLE_CHANNEL = ChannelRef("console", "console", "local", kind="text", name="console")
WIDTH = 100


def console_user() -> UserRef:
    try:
        name = getpass.getuser()
    except Exception:  # no passwd entry in some containers; any name will do
        name = "you"
    return UserRef("console", name, name, "local")


def render_text(reply: Reply, *, width: int = WIDTH) -> str:
    """A Reply as readable plain text (pure)."""
    out: list[str] = []
    if reply.text:
        out.append(reply.text)
    for i, card in enumerate(reply.cards, start=1):
        prefix = f"{i}. " if len(reply.cards) > 1 else ""
        out.append(f"{prefix}{card.title}")
        if card.url:
            out.append(f"   {card.url}")
        for f in card.fields:
            out.append(f"   {f.name}: {f.value}")
        if card.body:
            out.append(textwrap.fill(card.body, width=width, initial_indent="   ", subsequent_indent="   "))
        if card.links:
            out.append("   " + " · ".join(f"{label}: {url}" for label, url in card.links))
        if card.footer:
            out.append(f"   {card.footer}")
    return "\n".join(out)


class ConsolePlatform:
    name = "console"

    def __init__(self, service: CommandService | None = None, out: TextIO | None = None,
                 user: UserRef | None = None, transcript: Path | None = None) -> None:
        self.service = service
        self.out = out or sys.stdout
        self.user = user or console_user()
        self._count = 0
        # Optional JSON-lines record of every delivered message with its ledger key: what "the console
        # received", so a resend after a crash can be recognised (the console's nonce) and tests can compare.
        self.transcript = transcript

    async def start(self) -> None:
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """Cut a last line a kill interrupted: a write is whole unless a fatal signal lands while it crosses a
        page of the file, and that message was never acknowledged to the ledger, so it is sent again. Left in
        place, the next line would be appended to it and neither could be read back."""
        if self.transcript is None or not self.transcript.exists():
            return
        with self.transcript.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            keep = 0
            step = 65536
            end = size
            while end > 0 and not keep:
                start = max(0, end - step)
                fh.seek(start)
                chunk = fh.read(end - start)
                cut = chunk.rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                end = start
            fh.truncate(keep)

    async def stop(self) -> None:
        return None

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def send(self, delivery: Delivery, reply: Reply, *, thread_name: str | None,
                   parent_id: str | None) -> SendOutcome:
        self._count += 1
        mid = f"console-{delivery.id}"
        if delivery.attempts > 1 and self._already_delivered(delivery.key):
            # An earlier attempt got out before a crash could mark it sent: do not print it again.
            return SendOutcome(ok=True, message_id=mid)
        self._record(delivery, mid)
        if delivery.kind == "opener":
            self._print(f"\n━━ #{delivery.target.split(':')[-1]} · thread «{thread_name or ''}» ━━")
            self._print(render_text(reply))
        elif delivery.kind == "post":
            body = render_text(reply)
            self._print(textwrap.indent(body, "  │ "))
        else:
            self._print(f"\n✉ DM to {delivery.target.split(':')[-1]}:")
            self._print(textwrap.indent(render_text(reply), "  "))
        return SendOutcome(ok=True, message_id=mid)

    def _record(self, delivery: Delivery, mid: str) -> None:
        if self.transcript is None:
            return
        line = json.dumps({"key": delivery.key, "kind": delivery.kind, "target": delivery.target,
                           "message_id": mid, "paper_ids": list(delivery.paper_ids)}, ensure_ascii=False)
        # One write(2) of one whole line on an O_APPEND file: a kill leaves the line either there or not.
        fd = os.open(self.transcript, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def _already_delivered(self, key: str) -> bool:
        if self.transcript is None or not self.transcript.exists():
            return False
        with self.transcript.open(encoding="utf-8") as fh:
            for raw in fh:
                try:
                    if json.loads(raw).get("key") == key:
                        return True
                except ValueError:
                    continue
        return False

    def command(self, line: str) -> Command:
        name, args = parse_line(line)
        return Command(name=name or "help", args=args, user=self.user, channel=CONSOLE_CHANNEL, is_admin=True)

    async def say(self, line: str) -> Reply:
        assert self.service is not None
        reply = await self.service.handle(self.command(line))
        self._print(render_text(reply))
        return reply

    async def repl(self, stdin: TextIO | None = None, *, prompt: bool = False) -> None:
        """Read commands until end of input; each line is one command."""
        src = stdin or sys.stdin
        loop = asyncio.get_running_loop()
        while True:
            if prompt:
                self.out.write("paperboy> ")
                self.out.flush()
            line = await loop.run_in_executor(None, src.readline)
            if not line:
                return
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line in ("quit", "exit"):
                return
            await self.say(line)
