"""Locust scenarios for any Tutorhub deployment: `locust -f load_tests/locustfile.py --host URL`.

User classes (pick some by name on the command line, e.g. `... Learner Listener`):
- `Learner`: one socket; asks questions from a file, one at a time, and reports the connect time,
  the time to the first `reply.delta`, the reply's duration and tokens/s; a dropped socket is
  resumed by offset (reported as `resume`).
- `ReconnectStorm`: asks, then drops its socket abruptly (no close frame) after a few deltas and
  resumes on a new one, several times per reply; every gap or duplicate of `o` or `seq` is a
  failure (`gap`, `duplicate`: there must be none).
- `MaterialUploader`: REST upload of a text material (`POST /materials/text`), then waits for its
  `material.ready` on its socket (`material ready`).
- `Listener`: many idle sockets of one identity (a learner's, when there is one), for fan-out:
  every event it gets is counted, each `reply.end` reported with the time since its
  `reply.start` on that socket (`listener reply`).

Identities: `--tutorhub-tokens FILE` (embed tokens, one per line, from load_tests/mint_tokens.py;
needs TUTORHUB_EMBED_SECRET on the server), else each user registers `load-<random>@example.com`
(`POST /auth/register`, `POST /auth/token`). In locust's statistics the custom entries have
request type `WS`; `tokens/s` carries its value in the response-time columns (a rate, not
milliseconds). Errors: `error <code>` (error frames), `reply.error <code>`, `close <code>`.
`--tutorhub-summary FILE` writes this process's counters as JSON when locust quits.

The WebSocket client is websocket-client, which locust's gevent monkey-patching makes
cooperative: one reader greenlet per socket answers the server's `ping` frames at once.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import gevent
import websocket
from gevent.queue import Empty, Queue
from locust import HttpUser, between, events, task
from locust.env import Environment

HERE = Path(__file__).parent
Frame = dict[str, Any]

COUNTERS: Counter[str] = Counter()
_IDENTITIES: list[str] = []  # tokens of users that logged in here (listeners join them)
_NEXT_TOKEN = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("Tutorhub")
    group.add_argument("--tutorhub-tokens", default="", help="File of embed tokens, one a line "
                       "(load_tests/mint_tokens.py); unset: users register and log in")
    group.add_argument("--tutorhub-password", default="load-test-password-0123",
                       help="Password of the users that register")
    group.add_argument("--tutorhub-questions", default=str(HERE / "questions.txt"),
                       help="File of questions, one a line")
    group.add_argument("--tutorhub-listener-sockets", type=int, default=10,
                       help="Sockets per Listener user")
    group.add_argument("--tutorhub-drops", type=int, default=3,
                       help="Socket drops per reply (ReconnectStorm)")
    group.add_argument("--tutorhub-reply-timeout", type=float, default=120.0,
                       help="Seconds a reply (or a material) may take")
    group.add_argument("--tutorhub-summary", default="",
                       help="Write this process's counters (JSON) here on quit")


@events.quitting.add_listener
def _summary(environment: Environment, **_: Any) -> None:
    path = environment.parsed_options and environment.parsed_options.tutorhub_summary
    if path:
        Path(path).write_text(json.dumps(dict(COUNTERS), sort_keys=True))


def _lines(path: str) -> list[str]:
    return [line.strip() for line in Path(path).read_text("utf-8").splitlines() if line.strip()]


class Closed(Exception):
    """The socket ended; `code` is the close code (1006 when no close frame came)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"socket closed ({code})")
        self.code = code


class Socket:
    """One authenticated /ws/v1 socket. A reader greenlet answers pings and queues the frames;
    `next()` hands them out and checks offsets: each event's `o` must follow the last one's."""

    def __init__(self, user: TutorhubUser, token: str, resume: tuple[str, int] | None = None
                 ) -> None:
        self.user = user
        started = time.perf_counter()
        url = (user.host or "").replace("http", "ws", 1).rstrip("/") + "/ws/v1"
        self.ws = websocket.create_connection(url, timeout=30, enable_multithread=True)
        auth: Frame = {"type": "auth", "token": token}
        if resume:
            auth["resume"] = {"epoch": resume[0], "since": resume[1]}
        self.ws.send(json.dumps(auth))
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise Closed(int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005)
        welcome = json.loads(data)
        if welcome.get("type") != "welcome":
            raise RuntimeError(f"expected welcome, got {welcome.get('type')}")
        self.connect_ms = (time.perf_counter() - started) * 1000
        self.epoch: str = welcome["epoch"]
        self.last_o: int = resume[1] if resume else welcome["offset"]
        self.frames: Queue[Frame | Closed] = Queue()
        self.alive = True
        self.reader = gevent.spawn(self._read)
        COUNTERS["sockets opened"] += 1

    def _read(self) -> None:
        code = 1006
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    break
                frame = json.loads(data)
                if frame.get("type") == "ping":
                    self.send({"type": "pong"})
                    continue
                self.frames.put(frame)
        except Exception:  # a dropped connection ends the reader like a close without a frame
            pass
        self.alive = False
        self.frames.put(Closed(code))

    def send(self, frame: Frame) -> None:
        self.ws.send(json.dumps(frame))

    def next(self, timeout: float) -> Frame:
        """The next frame (raises Closed, or gevent's Empty after `timeout`)."""
        item = self.frames.get(timeout=timeout)
        if isinstance(item, Closed):
            self.frames.put(item)  # stays closed for every later call
            raise item
        o = item.get("o")
        if o is not None:
            # A coalesced reply.delta carries the o of its last part: it advances by `parts`
            # (docs/protocol.md, "Coalesced reply.delta").
            expected = self.last_o + item.get("parts", 1)
            if o < expected:
                self.user.failure("duplicate", f"event o={o} after o={self.last_o}")
            elif o > expected:
                self.user.failure("gap", f"event o={o} after o={self.last_o}")
            self.last_o = max(self.last_o, o)
            COUNTERS["events"] += 1
        if item.get("type") == "resume.failed":
            self.user.failure("resume.failed", item.get("reason", ""))
            self.epoch, self.last_o = item["epoch"], item["offset"]
        return item

    def drop(self) -> None:
        """End the TCP connection without a close frame, as a lost network would."""
        self.alive = False
        self.ws.abort()
        self.ws.shutdown()
        self.reader.kill(block=False)

    def close(self) -> None:
        self.alive = False
        try:
            self.ws.close(timeout=2)
        except Exception:
            pass
        self.reader.kill(block=False)


class Reply:
    """Checks one reply's `seq` (coalesced deltas advance it by their `parts`)."""

    def __init__(self, user: TutorhubUser, reply_id: str, sent: float) -> None:
        self.user, self.reply_id, self.sent = user, reply_id, sent
        self.seq = 0
        self.first: float | None = None
        self.text: list[str] = []

    def delta(self, frame: Frame) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.user.metric("first delta", (self.first - self.sent) * 1000)
        expected = self.seq + frame.get("parts", 1)
        if frame["seq"] < expected:
            self.user.failure("duplicate", f"seq {frame['seq']} after {self.seq}")
        elif frame["seq"] > expected:
            self.user.failure("gap", f"seq {frame['seq']} after {self.seq}")
        self.seq = max(self.seq, frame["seq"])
        self.text.append(frame["text"])

    def end(self, frame: Frame) -> None:
        now = time.perf_counter()
        tokens = int((frame.get("usage") or {}).get("output_tokens") or 0)
        self.user.metric("reply", (now - self.sent) * 1000, tokens)
        if self.first is not None and tokens > 1 and now > self.first:
            self.user.metric("tokens/s", tokens / (now - self.first))
        COUNTERS["replies"] += 1
        COUNTERS["tokens"] += tokens
        if frame.get("finish_reason") not in ("stop", "length"):
            self.user.failure(f"reply.end {frame.get('finish_reason')}", self.reply_id)


class TutorhubUser(HttpUser):
    abstract = True
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.token = self._identity()
        self.socket: Socket | None = None

    def on_stop(self) -> None:
        if self.socket is not None:
            self.socket.close()

    # --- statistics -----------------------------------------------------------------------
    def metric(self, name: str, value: float, length: int = 0) -> None:
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=value, response_length=length,
            exception=None, context={})

    def failure(self, name: str, detail: str) -> None:
        COUNTERS[name] += 1
        self.environment.events.request.fire(
            request_type="WS", name=name, response_time=0, response_length=0,
            exception=RuntimeError(detail), context={})

    # --- identities and sockets -----------------------------------------------------------
    def _identity(self) -> str:
        path = self.options.tutorhub_tokens if self.options else ""
        if path:
            tokens = _lines(path)
            token = tokens[next(_NEXT_TOKEN) % len(tokens)]
            _IDENTITIES.append(token)
            return token
        email = f"load-{uuid.uuid4().hex[:16]}@example.com"
        password = self.options.tutorhub_password if self.options else "load-test-password-0123"
        self.client.post("/auth/register", json={"email": email, "password": password},
                         name="/auth/register")
        r = self.client.post("/auth/token", data={"username": email, "password": password},
                             name="/auth/token")
        r.raise_for_status()
        token = str(r.json()["access_token"])
        _IDENTITIES.append(token)
        return token

    def connect(self, resume: tuple[str, int] | None = None) -> Socket:
        try:
            sock = Socket(self, self.token, resume)
        except Closed as closed:
            self.failure(f"close {closed.code}", "while connecting")
            raise
        self.metric("resume" if resume else "connect", sock.connect_ms)
        if resume:
            COUNTERS["resumes"] += 1
        return sock

    def ensure_socket(self) -> Socket:
        if self.socket is None or not self.socket.alive:
            resume = (self.socket.epoch, self.socket.last_o) if self.socket else None
            self.socket = self.connect(resume)
        return self.socket

    def ask(self, text: str, conversation_id: str | None, drops: int = 0) -> str | None:
        """Send one question and follow its reply to `reply.end`, resuming after a drop (and
        dropping the socket itself `drops` times, after the 2nd delta each time). Returns the
        conversation id."""
        sock = self.ensure_socket()
        cid = uuid.uuid4().hex
        frame: Frame = {"type": "chat.send", "id": cid, "text": text}
        if conversation_id:
            frame["conversation_id"] = conversation_id
        sent = time.perf_counter()
        sock.send(frame)
        reply: Reply | None = None
        deltas_since_drop = 0
        deadline = sent + (self.options.tutorhub_reply_timeout if self.options else 120.0)
        while True:
            try:
                frame = sock.next(timeout=max(0.1, deadline - time.perf_counter()))
            except Empty:
                self.failure("timeout", f"no reply.end within the reply timeout ({text[:40]})")
                sock.drop()
                return conversation_id
            except Closed as closed:
                if closed.code not in (1000, 1006, 1012):
                    self.failure(f"close {closed.code}", "during a reply")
                sock = self.ensure_socket()
                continue
            kind = frame.get("type")
            if kind == "error":
                self.failure(f"error {frame.get('code')}", str(frame.get("message")))
                if frame.get("id") == cid:
                    return conversation_id
            elif kind == "chat.ack" and frame.get("id") == cid:
                reply = Reply(self, frame["reply_id"], sent)
                conversation_id = frame["conversation_id"]
            elif reply is None or frame.get("reply_id") != reply.reply_id:
                continue  # another socket's or an earlier reply's events of this identity
            elif kind == "reply.delta":
                reply.delta(frame)
                deltas_since_drop += 1
                if drops and deltas_since_drop >= 2:
                    drops -= 1
                    deltas_since_drop = 0
                    COUNTERS["drops"] += 1
                    sock.drop()
                    sock = self.ensure_socket()
            elif kind == "reply.error":
                self.failure(f"reply.error {frame.get('code')}", str(frame.get("message")))
            elif kind == "reply.end":
                reply.end(frame)
                return conversation_id


class Learner(TutorhubUser):
    weight = 6

    def on_start(self) -> None:
        super().on_start()
        questions = self.options.tutorhub_questions if self.options else HERE / "questions.txt"
        self.questions = _lines(str(questions))
        self.conversation: str | None = None
        self.asked = 0
        self.ensure_socket()

    @task
    def question(self) -> None:
        if self.asked % 10 == 0:
            self.conversation = None  # a new conversation every 10 questions
        self.asked += 1
        self.conversation = self.ask(random.choice(self.questions), self.conversation)


class ReconnectStorm(TutorhubUser):
    weight = 1

    def on_start(self) -> None:
        super().on_start()
        self.ensure_socket()

    @task
    def stormy_question(self) -> None:
        drops = self.options.tutorhub_drops if self.options else 3
        self.ask("Explain mitosis step by step.", None, drops=drops)


class MaterialUploader(TutorhubUser):
    weight = 1
    wait_time = between(2.0, 5.0)

    def on_start(self) -> None:
        super().on_start()
        self.ensure_socket()

    @task
    def upload(self) -> None:
        sock = self.ensure_socket()
        marker = uuid.uuid4().hex  # a new text each time: the same content is not re-ingested
        text = "\n\n".join(
            f"Section {i} ({marker}). Mitosis is the division of a cell nucleus into two "
            f"identical nuclei. Митоз — деление ядра клетки на два одинаковых ядра. "
            f"Prophase, metaphase, anaphase and telophase follow each other." for i in range(6))
        started = time.perf_counter()
        r = self.client.post("/materials/text", json={"title": f"Load {marker[:8]}", "text": text},
                             headers={"Authorization": f"Bearer {self.token}"},
                             name="/materials/text")
        if r.status_code != 202:
            return  # counted by locust as the request's failure
        material_id = r.json()["id"]
        deadline = started + (self.options.tutorhub_reply_timeout if self.options else 120.0)
        while True:
            try:
                frame = sock.next(timeout=max(0.1, deadline - time.perf_counter()))
            except Empty:
                self.failure("timeout", "no material.ready within the timeout")
                return
            except Closed:
                sock = self.ensure_socket()
                continue
            if frame.get("material_id") != material_id:
                continue
            if frame.get("type") == "material.ready":
                self.metric("material ready", (time.perf_counter() - started) * 1000,
                            int(frame.get("chunks") or 0))
                COUNTERS["materials"] += 1
                return
            if frame.get("type") == "material.failed":
                self.failure("material.failed", str(frame.get("reason")))
                return


class Listener(TutorhubUser):
    weight = 1
    wait_time = between(5.0, 10.0)

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.socket = None
        # Hear a learner's replies on every socket: wait for one to log in when learners run.
        learners = any(issubclass(c, Learner) for c in self.environment.user_classes)
        for _ in range(300 if learners else 1):
            if _IDENTITIES:
                self.token = random.choice(_IDENTITIES)
                break
            gevent.sleep(0.1)
        else:
            self.token = self._identity()
        count = self.options.tutorhub_listener_sockets if self.options else 10
        self.sockets = [self.connect() for _ in range(count)]
        self.followers = [gevent.spawn(self._follow, sock) for sock in self.sockets]

    def on_stop(self) -> None:
        for follower in self.followers:
            follower.kill(block=False)
        for sock in self.sockets:
            sock.close()

    def _follow(self, sock: Socket) -> None:
        started: dict[str, float] = {}
        while True:
            try:
                frame = sock.next(timeout=3600)
            except (Closed, Empty):
                return
            COUNTERS["listener frames"] += 1
            kind = frame.get("type")
            if kind == "reply.start":
                started[frame["reply_id"]] = time.perf_counter()
            elif kind == "reply.end" and frame["reply_id"] in started:
                at = started.pop(frame["reply_id"])
                self.metric("listener reply", (time.perf_counter() - at) * 1000)

    @task
    def idle(self) -> None:
        for i, sock in enumerate(self.sockets):
            if not sock.alive:  # resume where it stopped: nothing may be missed
                self.followers[i].kill(block=False)
                self.sockets[i] = self.connect((sock.epoch, sock.last_o))
                self.followers[i] = gevent.spawn(self._follow, self.sockets[i])
