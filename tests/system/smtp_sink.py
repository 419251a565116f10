"""A minimal SMTP receiver for the notification tests (RFC 5321 subset: EHLO/HELO, MAIL, RCPT,
DATA, RSET, NOOP, QUIT), written here because Python's smtpd is deprecated. It runs an asyncio
server on 127.0.0.1 in a background thread and keeps every accepted message.

    with SmtpSink() as sink:
        smtp_url = sink.url                  # smtp://127.0.0.1:PORT, for SMTP_URL
        mail = sink.wait_for(1, 10)[0]
        mail.rcpt_tos, mail.message["Subject"]

No authentication or TLS is offered (EHLO advertises only 8BITMIME), so a client that insists on
either fails loudly instead of being faked.
"""

import asyncio
import dataclasses
import email
import email.policy
import threading
import time

MAX_LINE = 1024 * 1024


@dataclasses.dataclass
class Mail:
    """One message the sink accepted: the envelope and the parsed content."""
    mail_from: str
    rcpt_tos: list
    data: bytes          # the message as received, dot-unstuffed, CRLF line ends
    message: object      # email.message.EmailMessage (policy.default: decoded headers)


def _address(arg, keyword):
    """The address in 'FROM:<a@b> SIZE=1' / 'TO:<a@b>'; None when malformed."""
    if not arg.upper().startswith(keyword):
        return None
    rest = arg[len(keyword):].strip()
    if not rest.startswith("<") or ">" not in rest:
        return None
    return rest[1:rest.index(">")]


class SmtpSink:
    def __init__(self):
        self.mails = []
        self.commands = []            # every command line received, for failure messages
        self._cond = threading.Condition()
        self._loop = None
        self._server = None
        self._thread = None
        self.port = None

    # -- lifecycle

    def start(self):
        ready = threading.Event()
        failure = []

        def run():
            self._loop = asyncio.new_event_loop()
            try:
                self._server = self._loop.run_until_complete(
                    asyncio.start_server(self._session, "127.0.0.1", 0, limit=MAX_LINE))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as exc:   # reported by start()
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        assert self.port, "the SMTP sink did not start"
        return self

    def stop(self):
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        return f"smtp://127.0.0.1:{self.port}"

    # -- results

    def received(self):
        with self._cond:
            return list(self.mails)

    def wait_for(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.mails) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"SMTP sink: {len(self.mails)} message(s) within "
                                         f"{timeout}s, expected {n}; commands seen: "
                                         f"{self.commands[-40:]!r}")
                self._cond.wait(left)
            return list(self.mails[:n])

    # -- the protocol

    async def _session(self, reader, writer):
        async def reply(text):
            writer.write(text.encode() + b"\r\n")
            await writer.drain()

        mail_from, rcpts = None, []
        try:
            await reply("220 sink.test ESMTP docket test sink")
            while True:
                line = await reader.readline()
                if not line:
                    return
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    self.commands.append(text)
                verb, _, arg = text.partition(" ")
                verb = verb.upper()
                if verb == "EHLO":
                    await reply("250-sink.test\r\n250 8BITMIME")
                elif verb == "HELO":
                    await reply("250 sink.test")
                elif verb == "MAIL":
                    mail_from = _address(arg, "FROM:")
                    if mail_from is None:
                        await reply("501 syntax: MAIL FROM:<address>")
                    else:
                        rcpts = []
                        await reply("250 OK")
                elif verb == "RCPT":
                    addr = _address(arg, "TO:")
                    if mail_from is None:
                        await reply("503 MAIL first")
                    elif not addr:
                        await reply("501 syntax: RCPT TO:<address>")
                    else:
                        rcpts.append(addr)
                        await reply("250 OK")
                elif verb == "DATA":
                    if mail_from is None or not rcpts:
                        await reply("503 MAIL and RCPT first")
                        continue
                    await reply("354 end with <CRLF>.<CRLF>")
                    lines = []
                    while True:
                        raw = await reader.readline()
                        if not raw:
                            return
                        if raw in (b".\r\n", b".\n"):
                            break
                        if raw.startswith(b"."):
                            raw = raw[1:]
                        lines.append(raw)
                    data = b"".join(lines)
                    msg = email.message_from_bytes(data, policy=email.policy.default)
                    with self._cond:
                        self.mails.append(Mail(mail_from=mail_from, rcpt_tos=list(rcpts),
                                               data=data, message=msg))
                        self._cond.notify_all()
                    mail_from, rcpts = None, []
                    await reply("250 OK queued")
                elif verb == "RSET":
                    mail_from, rcpts = None, []
                    await reply("250 OK")
                elif verb == "NOOP":
                    await reply("250 OK")
                elif verb == "QUIT":
                    await reply("221 bye")
                    return
                elif verb == "VRFY":
                    await reply("252 cannot verify")
                else:
                    await reply("502 command not implemented")
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):  # ValueError: line over MAX_LINE
            return
        finally:
            writer.close()
