"""`/cards` and `/quiz`: flashcard review and quizzes in Telegram, through the study REST routes.

The bridge is a client here as everywhere: `GET /flashcards/due` and `POST
/flashcards/{id}/review` (the FSRS scheduling and daily limits the widget gets, no second
implementation), `GET /quizzes/{id}`, `POST /quizzes/{id}/check` after each answer (feedback,
explanation, the cited page) and one `POST /quizzes/{id}/attempts` at the end, as the widget
does. What a chat is doing lives in its buttons' callback data and, for a quiz, in
`telegram_quizzes`, never in one bridge process's memory: the next update may go to another.

Callback data (at most 64 bytes): `cr:<a|h|g|e>:<card>` rates a card, `qm:<material>` picks the
quiz's material, `qa:<quiz>:<question index>:<option index|t|f>` answers, `qx:<quiz>` ends it
(ids as 32 hex digits).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message

from chat_server.db import Database
from chat_server.study.grounding import flat
from chat_server.telegram import store
from chat_server.telegram.claims import Claims
from chat_server.telegram.client import TutorhubClient, Unavailable
from chat_server.telegram.render import escape
from chat_server.telegram.texts import t

log = logging.getLogger(__name__)

RATINGS = ("again", "hard", "good", "easy")
CALLBACK = re.compile(r"^(cr|qm|qa|qx):")
QUIZ_IDLE_S = 1800.0  # a quiz untouched this long no longer takes the chat's texts as answers
RATED_CLAIM_TTL_S = 86_400  # a card message is rated once (a second press, another process)
MAX_MATERIALS = 20  # buttons offered by /quiz
LETTERS = "ABCDEFGH"


class Say(Protocol):
    def __call__(self, chat_id: int, text: str, **kwargs: Any) -> Awaitable[Message | None]: ...


Edit = Callable[[int, int, str], Awaitable[None]]
Ack = Callable[[str | None], Awaitable[None]]


def _hex(value: str) -> str:
    return uuid.UUID(value).hex


def _buttons(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[
        [InlineKeyboardButton(text=text, callback_data=data) for text, data in row]
        for row in rows])


def source(lang: str, item: dict[str, Any]) -> str:
    """"📖 p. 3: «the sentence»": where a card's or an answer's sentence is."""
    where = ""
    if item.get("page") is not None:
        where = f"{t(lang, 'page')} {item['page']}"
    elif item.get("start_s") is not None:
        seconds = int(item["start_s"])
        where = f"{seconds // 60}:{seconds % 60:02d}"
    quote = escape(str(item.get("quote") or ""))
    return f"📖 {where}: «{quote}»" if where else f"📖 «{quote}»"


def next_review(lang: str, due: str, now: datetime | None = None) -> str:
    """When a card is due again, roughly, from now: "in 10 min", "через 3 дн."."""
    seconds = (datetime.fromisoformat(due) - (now or datetime.now(UTC))).total_seconds()
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return t(lang, "in_minutes", n=minutes)
    if minutes < 48 * 60:
        return t(lang, "in_hours", n=round(minutes / 60))
    return t(lang, "in_days", n=round(minutes / 1440))


class StudyChat:
    def __init__(self, client: TutorhubClient, db: Database, claims: Claims, say: Say,
                 edit: Edit) -> None:
        self.client = client
        self.db = db
        self.claims = claims
        self.say = say
        self.edit = edit

    async def _rest(self, chat_id: int, lang: str, user_id: uuid.UUID, method: str, path: str,
                    **request: Any) -> Any:
        """The answer's JSON; None after telling the chat why there is none."""
        try:
            r = await self.client.rest(user_id, method, path, **request)
        except Unavailable:
            await self.say(chat_id, t(lang, "unavailable"))
            return None
        if r.status_code == 404:
            await self.say(chat_id, t(lang, "study_gone"))
            return None
        if r.status_code >= 400:
            log.warning("chat %s: %s %s answered %s", chat_id, method, path, r.status_code)
            await self.say(chat_id, t(lang, "unavailable"))
            return None
        return r.json()

    async def callback(self, message: Message, user_id: uuid.UUID, lang: str, data: str,
                       ack: Ack) -> None:
        kind, _, rest = data.partition(":")
        try:
            if kind == "cr":
                letter, card = rest.split(":")
                await self.rate(message, user_id, lang, letter, uuid.UUID(card), ack)
            elif kind == "qm":
                await ack(None)
                await self.pick(message, user_id, lang, uuid.UUID(rest))
            elif kind == "qa":
                quiz, index, option = rest.split(":")
                await self.answer(message.chat.id, message, user_id, lang, uuid.UUID(quiz),
                                  int(index), option, ack)
            elif kind == "qx":
                await ack(None)
                await self.finish(message.chat.id, user_id, lang, uuid.UUID(rest), message)
        except ValueError:  # not data we made
            log.debug("chat %s: unknown callback data %r", message.chat.id, data)

    # --- /cards ---------------------------------------------------------------------------

    async def cards(self, chat_id: int, user_id: uuid.UUID, lang: str, *, after: bool = False
                    ) -> None:
        """The next card due (today's limits apply), or that there is none."""
        due = await self._rest(chat_id, lang, user_id, "GET", "/flashcards/due",
                               params={"limit": 1})
        if due is None:
            return
        if not due["cards"]:
            await self.say(chat_id, t(lang, "cards_done" if after else "cards_none"))
            return
        card = due["cards"][0]
        left = min(due["due"], due["reviews_left"]) + min(due["new"], due["new_left"])
        # The answer and its sentence under a spoiler: tapping it is turning the card over.
        text = (f"{t(lang, 'card_head', left=left)}\n\n{escape(card['front'])}\n\n"
                f"<tg-spoiler>{escape(card['back'])}\n{source(lang, card)}</tg-spoiler>")
        rows = [[(t(lang, f"rate_{r}"), f"cr:{r[0]}:{_hex(card['id'])}") for r in RATINGS]]
        await self.say(chat_id, text, reply_markup=_buttons(rows))

    async def rate(self, message: Message, user_id: uuid.UUID, lang: str, letter: str,
                   card: uuid.UUID, ack: Ack) -> None:
        rating = next((r for r in RATINGS if r[0] == letter), None)
        if rating is None:
            raise ValueError(letter)
        chat_id = message.chat.id
        if not await self.claims.claim(f"cr:{chat_id}:{message.message_id}", RATED_CLAIM_TTL_S):
            await ack(t(lang, "answered"))
            return
        await ack(None)
        review = await self._rest(chat_id, lang, user_id, "POST", f"/flashcards/{card}/review",
                                  json={"rating": rating})
        if review is None:
            return
        rated = t(lang, "card_rated", rating=t(lang, f"rate_{rating}"),
                  when=next_review(lang, review["due"]))
        # The card as it reads (the spoiler turned over), its buttons gone, how it was rated.
        await self.edit(chat_id, message.message_id,
                        f"{escape(message.text or '')}\n\n<i>{rated}</i>")
        await self.cards(chat_id, user_id, lang, after=True)

    # --- /quiz ----------------------------------------------------------------------------

    async def quiz(self, chat_id: int, user_id: uuid.UUID, lang: str) -> None:
        """Offer the ready materials as buttons: the user's own, then those of the courses they
        are in (labelled with the course's title; the study routes serve them to members)."""
        materials = await self._rest(chat_id, lang, user_id, "GET", "/materials",
                                     params={"limit": 100})
        courses = materials is not None and await self._rest(chat_id, lang, user_id, "GET",
                                                             "/courses")
        if materials is None or courses is None:
            return
        labelled = [(m["title"][:60] or "…", m) for m in materials]
        for course in courses or []:
            if len(labelled) >= MAX_MATERIALS:
                break
            listed = await self._rest(chat_id, lang, user_id, "GET", "/materials",
                                      params={"course_id": course["id"], "limit": 100})
            if listed is None:
                return
            labelled += [(f"{course['title'][:30]} · {m['title'][:40] or '…'}", m)
                         for m in listed]
        ready = [(label, m) for label, m in labelled if m["status"] == "ready"][:MAX_MATERIALS]
        if not ready:
            await self.say(chat_id, t(lang, "quiz_no_materials"))
            return
        rows = [[(label, f"qm:{_hex(m['id'])}")] for label, m in ready]
        await self.say(chat_id, t(lang, "quiz_pick"), reply_markup=_buttons(rows))

    async def pick(self, message: Message, user_id: uuid.UUID, lang: str,
                   material_id: uuid.UUID) -> None:
        chat_id = message.chat.id
        material = await self._rest(chat_id, lang, user_id, "GET", f"/materials/{material_id}")
        study = material and await self._rest(chat_id, lang, user_id, "GET",
                                              f"/materials/{material_id}/study")
        if not study:
            return
        title = escape(material["title"])
        quiz = study["quiz_id"] and await self._rest(chat_id, lang, user_id, "GET",
                                                     f"/quizzes/{study['quiz_id']}")
        if not quiz or not quiz["questions"]:
            if study["status"] not in ("queued", "running"):
                await self._rest(chat_id, lang, user_id, "POST",
                                 f"/materials/{material_id}/study", json={})
            await self.edit(chat_id, message.message_id, t(lang, "quiz_preparing", title=title))
            return
        async with self.db.session() as session:
            await store.start_quiz(session, chat_id, user_id, uuid.UUID(quiz["id"]),
                                   typed=quiz["questions"][0]["kind"] == "short")
        await self.edit(chat_id, message.message_id,
                        t(lang, "quiz_start", title=title, count=len(quiz["questions"])))
        await self._ask(chat_id, lang, quiz, 0)

    def _question(self, lang: str, quiz: dict[str, Any], i: int) -> str:
        q = quiz["questions"][i]
        text = t(lang, "question", n=i + 1, total=len(quiz["questions"]),
                 prompt=escape(q["prompt"]))
        if q["kind"] == "choice":
            text += "\n" + "\n".join(f"<b>{LETTERS[k]}.</b> {escape(o)}"
                                     for k, o in enumerate(q["options"]))
        return text

    async def _ask(self, chat_id: int, lang: str, quiz: dict[str, Any], i: int) -> None:
        q = quiz["questions"][i]
        prefix = f"qa:{_hex(quiz['id'])}:{i}:"
        text = self._question(lang, quiz, i)
        rows: list[list[tuple[str, str]]] = []
        if q["kind"] == "choice":
            rows.append([(LETTERS[k], f"{prefix}{k}") for k in range(len(q["options"]))])
        elif q["kind"] == "true_false":
            rows.append([(t(lang, "true"), prefix + "t"), (t(lang, "false"), prefix + "f")])
        else:
            text += "\n\n" + t(lang, "type_answer")
        rows.append([(t(lang, "quiz_end"), f"qx:{_hex(quiz['id'])}")])
        await self.say(chat_id, text, reply_markup=_buttons(rows))

    async def typed(self, chat_id: int, user_id: uuid.UUID, lang: str, text: str) -> bool:
        """A text that answers the chat's current short-answer question (True: taken)."""
        async with self.db.session() as session:
            row = await store.quiz_of(session, chat_id, user_id, QUIZ_IDLE_S)
        if row is None or not row.typed:
            return False
        await self.answer(chat_id, None, user_id, lang, row.quiz_id, row.position, text, None)
        return True

    async def answer(self, chat_id: int, message: Message | None, user_id: uuid.UUID, lang: str,
                     quiz_id: uuid.UUID, i: int, given: str, ack: Ack | None) -> None:
        """Record the answer to question `i` (a button of `message`, or typed), show whether it
        was right with the explanation and the cited page, then the next question or the
        score."""
        quiz = await self._rest(chat_id, lang, user_id, "GET", f"/quizzes/{quiz_id}")
        if quiz is None or not 0 <= i < len(quiz["questions"]):
            if ack is not None:
                await ack(None)
            return
        questions = quiz["questions"]
        q = questions[i]
        answer: str | int | bool = given
        shown = given
        if ack is not None and q["kind"] == "choice":
            answer = q["options"][int(given)]
            shown = f"{LETTERS[int(given)]}. {answer}"
        elif ack is not None and q["kind"] == "true_false":
            answer = given == "t"
            shown = t(lang, "true" if answer else "false")
        later = questions[i + 1] if i + 1 < len(questions) else None
        async with self.db.session() as session:
            taken = await store.answer_quiz(
                session, chat_id, user_id, quiz_id, i,
                {"question_id": q["id"], "answer": answer},
                typed_next=later is not None and later["kind"] == "short")
        if taken is None:  # answered already, or the quiz ended
            if ack is not None:
                await ack(t(lang, "answered"))
            return
        if ack is not None:
            await ack(None)
        result = await self._rest(chat_id, lang, user_id, "POST", f"/quizzes/{quiz_id}/check",
                                  json={"question_id": q["id"], "answer": answer})
        if result is not None:
            right = result["answer"]
            if q["kind"] == "true_false":
                right = t(lang, "true" if right == "true" else "false")
            verdict = t(lang, "correct") if result["correct"] else \
                t(lang, "wrong", answer=escape(str(right)))
            explanation = result.get("explanation") or ""
            quote = result.get("quote") or ""
            if quote and flat(quote) in flat(explanation):
                explanation = ""  # it only quotes the sentence: the source line shows that
            feedback = "\n".join(part for part in (
                t(lang, "your_answer", answer=escape(str(shown))), f"<b>{verdict}</b>",
                escape(explanation), source(lang, result)) if part)
            if message is not None:  # the question, its buttons gone, with the feedback
                await self.edit(chat_id, message.message_id,
                                f"{self._question(lang, quiz, i)}\n\n{feedback}")
            else:
                await self.say(chat_id, feedback)
        if later is not None:
            await self._ask(chat_id, lang, quiz, i + 1)
        else:
            await self.finish(chat_id, user_id, lang, quiz_id, None)

    async def finish(self, chat_id: int, user_id: uuid.UUID, lang: str, quiz_id: uuid.UUID,
                     message: Message | None) -> None:
        """The quiz's attempt (unanswered questions count as wrong), stored as the widget's
        is, and the score."""
        async with self.db.session() as session:
            answers = await store.end_quiz(session, chat_id, user_id, quiz_id)
        if answers is None:
            return  # ended already
        if message is not None:  # "End quiz" pressed: that question's buttons go
            await self.edit(chat_id, message.message_id, escape(message.text or ""))
        attempt = await self._rest(chat_id, lang, user_id, "POST", f"/quizzes/{quiz_id}/attempts",
                                   json={"answers": answers})
        if attempt is not None:
            await self.say(chat_id, t(lang, "quiz_score", score=attempt["score"],
                                      total=attempt["total"]))
