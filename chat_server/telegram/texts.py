"""Everything the bot says, in English and Russian (the user's Telegram language decides)."""

from __future__ import annotations

from typing import Any

EN: dict[str, str] = {
    "help": (
        "<b>Tutorhub tutor</b>: ask about your study materials and I answer from them, "
        "with sources.\n\n"
        "/new: start a new conversation\n"
        "/stop: stop the reply being written\n"
        "/materials: your materials and their status\n"
        "/socratic on|off: I guide you with questions instead of answers\n"
        "/cards: review flashcards\n"
        "/quiz: a quiz on a material\n"
        "/unlink: disconnect this Telegram account\n\n"
        "Send a file to add it to your materials: a PDF (with text or scanned), Word (.docx), "
        "PowerPoint (.pptx), Markdown, HTML or text file, or a PNG or JPEG image of a page. "
        "Send a YouTube link to add its transcript."
    ),
    "unlinked": (
        "This is the Tutorhub tutor. To use it, link your account: open Tutorhub in the "
        "browser, press <b>Link Telegram</b> and follow the link it shows."
    ),
    "linked": "Linked. Ask me anything about your materials; /help lists what I can do.",
    "link_revoked": (
        "Your Tutorhub password was changed, so this Telegram account was unlinked. Link it "
        "again: press <b>Link Telegram</b> in Tutorhub."
    ),
    "code_used": "This link was already used. Ask Tutorhub for a new one (Link Telegram).",
    "code_expired": "This link has expired. Ask Tutorhub for a new one (Link Telegram).",
    "code_unknown": "This link is not valid. Ask Tutorhub for a new one (Link Telegram).",
    "welcome_back": "You are linked. Ask me anything; /help lists the commands.",
    "unlinked_done": "This Telegram account is no longer linked to Tutorhub.",
    "not_linked": "This Telegram account is not linked.",
    "new": "New conversation. Ask your first question.",
    "stopped_none": "Nothing is being written right now.",
    "stopping": "Stopping…",
    "socratic_on": "Socratic mode is on: I will guide you with questions.",
    "socratic_off": "Socratic mode is off: I answer directly.",
    "socratic_usage": "Socratic mode is {state}. Use /socratic on or /socratic off.",
    "on": "on",
    "off": "off",
    "card_head": "🃏 <b>Flashcard</b> · {left} to review today",
    "cards_none": "No flashcards are due now. New cards come with each material you add.",
    "cards_done": "That was the last card due for now. 🎉",
    "card_rated": "{rating} · next review {when}",
    "rate_again": "Again",
    "rate_hard": "Hard",
    "rate_good": "Good",
    "rate_easy": "Easy",
    "in_minutes": "in {n} min",
    "in_hours": "in {n} h",
    "in_days": "in {n} days",
    "answered": "Already answered.",
    "study_gone": "This is no longer there (was the material deleted?).",
    "quiz_pick": "Choose a material for the quiz:",
    "quiz_no_materials": "You have no ready materials yet. Send a PDF or a YouTube link first.",
    "quiz_preparing": "The quiz on {title} is being prepared. Try /quiz again in a minute.",
    "quiz_start": "📝 <b>Quiz: {title}</b>, {count} questions",
    "question": "❓ <b>Question {n} of {total}</b>\n{prompt}",
    "type_answer": "<i>Type your answer.</i>",
    "true": "True",
    "false": "False",
    "quiz_end": "End the quiz",
    "your_answer": "Your answer: {answer}",
    "correct": "✅ Correct!",
    "wrong": "❌ Not quite: the answer is «{answer}».",
    "quiz_score": "🏁 Your score: {score} of {total}.",
    "unavailable": "The tutor is not available right now. Please try again in a minute.",
    "busy": "I am still writing the previous answer. Wait for it, or /stop it.",
    "quota": "You have used today's tutor allowance ({used} of {quota} tokens).",
    "refused": "The tutor could not take this message: {message}",
    "stopped": "⏹ Stopped.",
    "failed": "⚠️ The answer failed: {message}",
    "interrupted": "⚠️ The answer was interrupted (the server restarted).",
    "sources": "Sources",
    "page": "p.",
    "slide": "slide",
    "section": "§ {title}",
    "materials_none": "You have no materials yet. Send a file (PDF, Word, PowerPoint, Markdown, "
                      "HTML, text, a scan) or a YouTube link.",
    "materials_head": "<b>Your materials</b>",
    "not_supported": (
        "I cannot read this file. I add PDFs (with text or scanned), Word (.docx), PowerPoint "
        "(.pptx), Markdown, HTML and text files, PNG and JPEG images, and YouTube links."
    ),
    "password_protected": "This file has a password. Save it without one and send it again.",
    "storage_full": (
        "Your file storage is full. Delete materials you no longer need in Tutorhub, then send "
        "the file again."
    ),
    "too_big": "This file is {size} MB; the upload limit is {limit} MB.",
    "too_big_api": "Telegram does not let bots download files this large ({size} MB).",
    "download_failed": "I could not download this file from Telegram. Please send it again.",
    "upload_failed": "The upload failed: {message}",
    "youtube_offer": "Add the transcript of this video to your materials?",
    "youtube_add": "Add transcript",
    "status_downloading": "⏳ {title}: downloading…",
    "status_queued": "⏳ {title}: queued…",
    "status_stage": "⏳ {title}: {stage} {done}/{total}",
    "status_ready": "✅ {title} is ready ({chunks} passages). Ask me about it.",
    "status_failed": "❌ {title} failed: {reason}",
    "status_exists": "✅ {title} is already in your materials.",
    "stage_extracting": "reading",
    "stage_chunking": "splitting",
    "stage_embedding": "indexing",
    "stage_indexing": "saving",
    "stage_ocr": "recognising text",
    "state_queued": "queued",
    "state_processing": "processing",
    "state_ready": "ready",
    "state_failed": "failed",
}

RU: dict[str, str] = {
    "help": (
        "<b>Репетитор Tutorhub</b>: спрашивайте о своих учебных материалах, я отвечаю по ним "
        "и указываю источники.\n\n"
        "/new: начать новый разговор\n"
        "/stop: остановить ответ\n"
        "/materials: ваши материалы и их статус\n"
        "/socratic on|off: наводящие вопросы вместо готовых ответов\n"
        "/cards: повторить карточки\n"
        "/quiz: тест по материалу\n"
        "/unlink: отвязать этот аккаунт Telegram\n\n"
        "Пришлите файл, чтобы добавить его в материалы: PDF (с текстом или скан), Word "
        "(.docx), PowerPoint (.pptx), Markdown, HTML, текстовый файл или снимок страницы "
        "(PNG, JPEG). Пришлите ссылку на YouTube, чтобы добавить расшифровку видео."
    ),
    "unlinked": (
        "Это репетитор Tutorhub. Чтобы им пользоваться, привяжите аккаунт: откройте Tutorhub "
        "в браузере, нажмите <b>Link Telegram</b> и перейдите по ссылке."
    ),
    "linked": "Аккаунт привязан. Спрашивайте о своих материалах; /help — что я умею.",
    "link_revoked": (
        "Пароль в Tutorhub был изменён, поэтому этот аккаунт Telegram отвязан. Привяжите его "
        "снова: нажмите <b>Link Telegram</b> в Tutorhub."
    ),
    "code_used": "Эта ссылка уже использована. Получите новую в Tutorhub (Link Telegram).",
    "code_expired": "Срок действия ссылки истёк. Получите новую в Tutorhub (Link Telegram).",
    "code_unknown": "Ссылка недействительна. Получите новую в Tutorhub (Link Telegram).",
    "welcome_back": "Аккаунт привязан. Спрашивайте; /help — список команд.",
    "unlinked_done": "Этот аккаунт Telegram больше не привязан к Tutorhub.",
    "not_linked": "Этот аккаунт Telegram не привязан.",
    "new": "Новый разговор. Задайте первый вопрос.",
    "stopped_none": "Сейчас ничего не пишется.",
    "stopping": "Останавливаю…",
    "socratic_on": "Сократический режим включён: я буду направлять вас вопросами.",
    "socratic_off": "Сократический режим выключен: я отвечаю прямо.",
    "socratic_usage": "Сократический режим {state}. Команды: /socratic on или /socratic off.",
    "on": "включён",
    "off": "выключен",
    "card_head": "🃏 <b>Карточка</b> · к повторению сегодня: {left}",
    "cards_none": "Сейчас нет карточек к повторению. Новые появляются с каждым материалом.",
    "cards_done": "Это была последняя карточка на сейчас. 🎉",
    "card_rated": "{rating} · следующее повторение {when}",
    "rate_again": "Снова",
    "rate_hard": "Трудно",
    "rate_good": "Хорошо",
    "rate_easy": "Легко",
    "in_minutes": "через {n} мин",
    "in_hours": "через {n} ч",
    "in_days": "через {n} дн.",
    "answered": "Ответ уже принят.",
    "study_gone": "Этого больше нет (материал удалён?).",
    "quiz_pick": "Выберите материал для теста:",
    "quiz_no_materials": "Готовых материалов пока нет. Сначала пришлите PDF или ссылку на YouTube.",
    "quiz_preparing": "Тест по «{title}» готовится. Повторите /quiz через минуту.",
    "quiz_start": "📝 <b>Тест: {title}</b>, вопросов: {count}",
    "question": "❓ <b>Вопрос {n} из {total}</b>\n{prompt}",
    "type_answer": "<i>Напишите ответ.</i>",
    "true": "Верно",
    "false": "Неверно",
    "quiz_end": "Закончить тест",
    "your_answer": "Ваш ответ: {answer}",
    "correct": "✅ Верно!",
    "wrong": "❌ Не совсем: правильный ответ — «{answer}».",
    "quiz_score": "🏁 Ваш результат: {score} из {total}.",
    "unavailable": "Репетитор сейчас недоступен. Попробуйте через минуту.",
    "busy": "Я ещё пишу предыдущий ответ. Дождитесь его или нажмите /stop.",
    "quota": "Дневной лимит репетитора исчерпан ({used} из {quota} токенов).",
    "refused": "Репетитор не принял сообщение: {message}",
    "stopped": "⏹ Остановлено.",
    "failed": "⚠️ Ответ не удался: {message}",
    "interrupted": "⚠️ Ответ прерван (сервер перезапустился).",
    "sources": "Источники",
    "page": "с.",
    "slide": "слайд",
    "section": "раздел «{title}»",
    "materials_none": "Материалов пока нет. Пришлите файл (PDF, Word, PowerPoint, Markdown, "
                      "HTML, текст, скан) или ссылку на YouTube.",
    "materials_head": "<b>Ваши материалы</b>",
    "not_supported": (
        "Не могу прочитать этот файл. Я добавляю PDF (с текстом или сканы), Word (.docx), "
        "PowerPoint (.pptx), Markdown, HTML и текстовые файлы, изображения PNG и JPEG и "
        "ссылки на YouTube."
    ),
    "password_protected": "Файл защищён паролем. Сохраните его без пароля и пришлите снова.",
    "storage_full": (
        "Хранилище ваших файлов заполнено. Удалите ненужные материалы в Tutorhub и пришлите "
        "файл снова."
    ),
    "too_big": "Файл весит {size} МБ; предел загрузки — {limit} МБ.",
    "too_big_api": "Telegram не даёт ботам скачивать такие большие файлы ({size} МБ).",
    "download_failed": "Не удалось скачать файл из Telegram. Пришлите его ещё раз.",
    "upload_failed": "Загрузка не удалась: {message}",
    "youtube_offer": "Добавить расшифровку этого видео в ваши материалы?",
    "youtube_add": "Добавить расшифровку",
    "status_downloading": "⏳ {title}: скачиваю…",
    "status_queued": "⏳ {title}: в очереди…",
    "status_stage": "⏳ {title}: {stage} {done}/{total}",
    "status_ready": "✅ {title} готов ({chunks} фрагментов). Спрашивайте.",
    "status_failed": "❌ {title}: ошибка — {reason}",
    "status_exists": "✅ {title} уже есть в ваших материалах.",
    "stage_extracting": "читаю",
    "stage_chunking": "разбиваю",
    "stage_embedding": "индексирую",
    "stage_indexing": "сохраняю",
    "stage_ocr": "распознаю текст",
    "state_queued": "в очереди",
    "state_processing": "обрабатывается",
    "state_ready": "готов",
    "state_failed": "ошибка",
}

_LANGS = {"en": EN, "ru": RU}


def language(code: str | None) -> str:
    """Our language for a Telegram `language_code`: Russian for ru*, English otherwise."""
    return "ru" if (code or "").lower().startswith("ru") else "en"


def t(lang: str, key: str, **values: Any) -> str:
    """The text `key` in `lang`; values are inserted as given (escape HTML before)."""
    text = _LANGS.get(lang, EN)[key]
    return text.format(**values) if values else text
