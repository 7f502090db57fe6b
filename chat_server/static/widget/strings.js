/*
 * The widget's UI strings: one catalogue per language, English (`UI`, also `EN`) and Russian
 * (`RU`), with the same keys. A widget picks its catalogue as it is built (pickLanguage below) and hands it to
 * its views as `t` (a part gets it as ctx.t), so two widgets on one page may speak different
 * languages. User, model and material text may be in any language; it reaches the DOM as the
 * server sends it.
 *
 * A feature module adds its strings under its own key to EVERY catalogue (a test checks that
 * each one has every English key; a key missing at run time falls back to English).
 *
 * `errors` translates the server's error codes (REST `error`, socket `error.code`,
 * `reply.error.code`). English has none: the server's own messages are English, and they carry
 * details (which field) that a generic sentence would lose. A code a catalogue does not name
 * shows the server's message.
 */

export const UI = {
  appName: 'Tutorhub',
  status: {
    connecting: 'Connecting…',
    connected: 'Connected',
    reconnecting: 'Reconnecting…',
    offline: 'Offline',
  },
  loginTitle: 'Sign in to your tutor',
  registerTitle: 'Create your account',
  email: 'Email',
  password: 'Password',
  logIn: 'Log in',
  register: 'Create account',
  toRegister: 'No account yet? Create one',
  toLogin: 'Have an account? Log in',
  logOut: 'Log out',
  conversations: 'Conversations',
  newConversation: 'New conversation',
  noConversations: 'No conversations yet.',
  socratic: 'Socratic mode',
  socraticHint: 'The tutor asks guiding questions instead of giving answers.',
  materials: 'Materials',
  messagesLabel: 'Messages',
  messagePlaceholder: 'Ask about your materials…',
  messageLabel: 'Message the tutor',
  send: 'Send',
  stop: 'Stop',
  emptyTitle: 'Ask your tutor anything',
  emptyBody: 'Add a file, a YouTube link or some text under Materials, then ask a question about it. '
    + 'Answers cite the passages they come from.',
  thinking: 'Thinking…',
  queued: (n) => `Waiting for the tutor (position ${n} in queue)…`,
  finish: {
    cancelled: 'Stopped',
    length: 'Cut short (length limit)',
    failed: 'Failed',
    interrupted: 'Interrupted',
  },
  sendFailed: 'Not sent',
  willSend: 'You are offline — messages will be sent when the connection is back.',
  reconnectingBanner: 'Connection lost — reconnecting…',
  source: (n) => `Source ${n}`,
  page: (p) => `p. ${p}`,
  slide: (n) => `slide ${n}`,
  section: (title) => `§ ${title}`,
  openAtPage: (p) => `Open the original at p. ${p}`,
  openSlide: (n) => `Open the presentation (slide ${n})`,
  openOriginal: 'Open the original file',
  originalUnavailable: 'The original file could not be opened.',
  at: (t) => `at ${t}`,
  watchAt: (t) => `Watch on YouTube at ${t}`,
  sourceMissing: 'This source is not available yet.',
  close: 'Close',
  dropHere: 'Drop a file here',
  dropOverlay: 'Drop files to upload them',
  chooseFile: 'Choose a file…',
  uploadHint: 'PDF (text or scanned), Word, PowerPoint, Markdown, HTML, text, PNG or JPEG — or '
    + 'drag and drop anywhere on the chat',
  youtubeLabel: 'YouTube link',
  youtubePlaceholder: 'https://www.youtube.com/watch?v=…',
  add: 'Add',
  textTitleLabel: 'Title',
  textTitlePlaceholder: 'Title (optional)',
  textLabel: 'Text',
  textPlaceholder: 'Paste notes or an article…',
  addText: 'Add text',
  noMaterials: 'No materials yet.',
  unsupportedFile: (name) => `“${name}” is not a file we read: upload a PDF, Word (.docx), `
    + 'PowerPoint (.pptx), Markdown, HTML, text, PNG or JPEG file.',
  uploading: 'Uploading',
  uploadFailed: (status) => `Upload failed (${status}).`,
  queuedMaterial: 'Queued',
  ready: 'Ready',
  failed: 'Failed',
  remove: 'Remove',
  kinds: {}, // a material's kind as the server names it (pdf, youtube, text)
  pages: (n) => `${n} ${n === 1 ? 'page' : 'pages'}`,
  slides: (n) => `${n} ${n === 1 ? 'slide' : 'slides'}`,
  chunks: (n) => `${n} ${n === 1 ? 'passage' : 'passages'}`,
  stages: {
    queued: 'Queued',
    download: 'Downloading',
    downloading: 'Downloading',
    fetch: 'Fetching',
    fetching: 'Fetching',
    transcript: 'Fetching transcript',
    extract: 'Reading',
    extracting: 'Reading',
    ocr: 'Recognising text',
    parse: 'Reading',
    chunk: 'Splitting',
    chunking: 'Splitting',
    embed: 'Embedding',
    embedding: 'Embedding',
    store: 'Saving',
    storing: 'Saving',
    index: 'Indexing',
    indexing: 'Indexing',
    done: 'Finishing',
  },
  networkError: 'Cannot reach the server.',
  requestFailed: (status) => `Request failed (${status}).`,
  error: 'Error',
  errors: {},
  sessionExpired: 'Your session has expired. Please log in again.',
  embedExpired: 'This chat session has expired. Reload the page to continue.',
  tutorReplied: 'Tutor replied: ',
  telegram: {
    link: 'Link Telegram',
    hint: (min) => `Open this link in Telegram within ${min} min to chat with your tutor there:`,
  },
  study: {
    open: 'Study',
    title: 'Study',
    tabs: { guide: 'Summary & notes', cards: 'Flashcards', quiz: 'Quiz' },
    summary: 'Summary',
    generate: 'Generate study tools',
    regenerate: 'Generate again',
    working: 'Generating',
    ready: 'Study tools are ready.',
    failed: 'Generation failed',
    none: 'No study tools yet.',
    counts: (cards, questions) => `${cards} flashcards · ${questions} quiz questions`,
    stages: { reading: 'Reading', sections: 'Reading sections', summary: 'Summarising',
      flashcards: 'Writing cards and questions', saving: 'Saving' },
    due: (due, fresh) => `${due} due · ${fresh} new`,
    progress: (n, total) => `Card ${n} of ${total}`,
    show: 'Show answer',
    keySpace: 'Space',
    ratings: { again: 'Again', hard: 'Hard', good: 'Good', easy: 'Easy' },
    nextDue: (when) => `Next review: ${when}`,
    allDone: 'All done for now. Come back when more cards are due.',
    noneDue: 'No cards are due.',
    noQuiz: 'No quiz yet.',
    question: (n, total) => `Question ${n} of ${total}`,
    true: 'True',
    false: 'False',
    yourAnswer: 'Your answer',
    check: 'Check',
    correct: 'Correct!',
    wrong: (answer) => `Not quite: the answer is “${answer}”.`,
    next: 'Next question',
    finish: 'See my score',
    score: (score, total) => `Your score: ${score} of ${total}`,
    again: 'Take the quiz again',
  },
};

/**
 * `UI` keeps its name from when it was the only catalogue. A view never imports it for what it
 * shows: it uses its element's catalogue `t` (ctx.t), which follows the page's language.
 */
export const EN = UI;

const ruPlural = new Intl.PluralRules('ru');

/** "1 страница", "3 страницы", "5 страниц", "21 страница". */
function ru(n, one, few, many) {
  const form = ruPlural.select(n);
  return `${n} ${form === 'one' ? one : form === 'few' ? few : many}`;
}

export const RU = {
  appName: 'Tutorhub',
  status: {
    connecting: 'Подключение…',
    connected: 'Подключено',
    reconnecting: 'Переподключение…',
    offline: 'Нет связи',
  },
  loginTitle: 'Вход к вашему тьютору',
  registerTitle: 'Создание аккаунта',
  email: 'Эл. почта',
  password: 'Пароль',
  logIn: 'Войти',
  register: 'Создать аккаунт',
  toRegister: 'Нет аккаунта? Создайте его',
  toLogin: 'Уже есть аккаунт? Войдите',
  logOut: 'Выйти',
  conversations: 'Беседы',
  newConversation: 'Новая беседа',
  noConversations: 'Бесед пока нет.',
  socratic: 'Сократовский режим',
  socraticHint: 'Тьютор задаёт наводящие вопросы вместо готовых ответов.',
  materials: 'Материалы',
  messagesLabel: 'Сообщения',
  messagePlaceholder: 'Спросите о своих материалах…',
  messageLabel: 'Сообщение тьютору',
  send: 'Отправить',
  stop: 'Остановить',
  emptyTitle: 'Спросите тьютора о чём угодно',
  emptyBody: 'Добавьте файл, ссылку на YouTube или текст в разделе «Материалы» и задайте вопрос '
    + 'о нём. В ответах есть ссылки на фрагменты, из которых они взяты.',
  thinking: 'Тьютор думает…',
  queued: (n) => `Ждём тьютора (место в очереди: ${n})…`,
  finish: {
    cancelled: 'Остановлено',
    length: 'Обрезано (предел длины)',
    failed: 'Ошибка',
    interrupted: 'Прервано',
  },
  sendFailed: 'Не отправлено',
  willSend: 'Нет связи — сообщения отправятся, когда она восстановится.',
  reconnectingBanner: 'Связь потеряна — переподключаемся…',
  source: (n) => `Источник ${n}`,
  page: (p) => `стр. ${p}`,
  slide: (n) => `слайд ${n}`,
  section: (title) => `раздел «${title}»`,
  openAtPage: (p) => `Открыть оригинал на стр. ${p}`,
  openSlide: (n) => `Открыть презентацию (слайд ${n})`,
  openOriginal: 'Открыть исходный файл',
  originalUnavailable: 'Не удалось открыть исходный файл.',
  at: (t) => `на ${t}`,
  watchAt: (t) => `Смотреть на YouTube с ${t}`,
  sourceMissing: 'Этот источник пока недоступен.',
  close: 'Закрыть',
  dropHere: 'Перетащите файл сюда',
  dropOverlay: 'Отпустите файлы, чтобы загрузить их',
  chooseFile: 'Выбрать файл…',
  uploadHint: 'PDF (с текстом или скан), Word, PowerPoint, Markdown, HTML, текст, PNG или JPEG — '
    + 'или перетащите файл в любое место чата',
  youtubeLabel: 'Ссылка на YouTube',
  youtubePlaceholder: 'https://www.youtube.com/watch?v=…',
  add: 'Добавить',
  textTitleLabel: 'Название',
  textTitlePlaceholder: 'Название (необязательно)',
  textLabel: 'Текст',
  textPlaceholder: 'Вставьте конспект или статью…',
  addText: 'Добавить текст',
  noMaterials: 'Материалов пока нет.',
  unsupportedFile: (name) => `«${name}» — файл, который мы не читаем: загрузите PDF, Word (.docx), `
    + 'PowerPoint (.pptx), Markdown, HTML, текст, PNG или JPEG.',
  uploading: 'Загрузка',
  uploadFailed: (status) => `Не удалось загрузить (${status}).`,
  queuedMaterial: 'В очереди',
  ready: 'Готово',
  failed: 'Ошибка',
  remove: 'Удалить',
  kinds: { text: 'текст' },
  pages: (n) => ru(n, 'страница', 'страницы', 'страниц'),
  slides: (n) => ru(n, 'слайд', 'слайда', 'слайдов'),
  chunks: (n) => ru(n, 'фрагмент', 'фрагмента', 'фрагментов'),
  stages: {
    queued: 'В очереди',
    download: 'Скачивание',
    downloading: 'Скачивание',
    fetch: 'Получение',
    fetching: 'Получение',
    transcript: 'Получение субтитров',
    extract: 'Чтение',
    extracting: 'Чтение',
    ocr: 'Распознавание текста',
    parse: 'Чтение',
    chunk: 'Разбиение',
    chunking: 'Разбиение',
    embed: 'Векторизация',
    embedding: 'Векторизация',
    store: 'Сохранение',
    storing: 'Сохранение',
    index: 'Индексация',
    indexing: 'Индексация',
    done: 'Завершение',
  },
  networkError: 'Нет связи с сервером.',
  requestFailed: (status) => `Запрос не выполнен (${status}).`,
  error: 'Ошибка',
  errors: {
    bad_credentials: 'Неверный адрес почты или пароль.',
    email_taken: 'Аккаунт с этим адресом уже есть.',
    rate_limited: 'Слишком много попыток. Подождите немного и попробуйте снова.',
    unauthorized: 'Нужно войти снова.',
    refresh_reused: 'Сеанс завершён. Войдите снова.',
    forbidden: 'Нет доступа.',
    not_found: 'Не найдено.',
    conversation_not_found: 'Беседа не найдена.',
    reply_not_found: 'Ответ не найден.',
    too_large: 'Слишком большой файл или текст.',
    unsupported_media_type: 'Этот тип файла не поддерживается.',
    password_protected: 'Документ защищён паролем. Снимите пароль и загрузите его снова.',
    storage_quota_exceeded: 'Файл не помещается в ваше хранилище. Удалите ненужные материалы.',
    invalid_request: 'Проверьте введённые данные.',
    bad_request: 'Неверный запрос.',
    conflict: 'Конфликт: данные уже изменились.',
    unavailable: 'Сервис временно недоступен. Попробуйте чуть позже.',
    internal: 'Внутренняя ошибка сервера.',
    quota_exceeded: 'Дневной лимит исчерпан. Возвращайтесь завтра.',
    reply_in_progress: 'Тьютор ещё отвечает: дождитесь конца ответа или остановите его.',
    provider_overloaded: 'Модель перегружена. Попробуйте ещё раз чуть позже.',
    provider_unreachable: 'Модель недоступна. Попробуйте ещё раз чуть позже.',
    provider_timeout: 'Модель не ответила вовремя.',
    provider_rejected: 'Модель отклонила запрос.',
    provider_stream_cut: 'Ответ оборвался.',
    telegram_disabled: 'Telegram на этом сервере не настроен.',
    telegram_unavailable: 'Telegram сейчас недоступен. Попробуйте чуть позже.',
  },
  sessionExpired: 'Сеанс истёк. Войдите снова.',
  embedExpired: 'Сеанс чата истёк. Обновите страницу, чтобы продолжить.',
  tutorReplied: 'Ответ тьютора: ',
  telegram: {
    link: 'Привязать Telegram',
    hint: (min) => `Откройте эту ссылку в Telegram в течение ${min} мин., чтобы заниматься с тьютором там:`,
  },
  study: {
    open: 'Учёба',
    title: 'Учёба',
    tabs: { guide: 'Конспект', cards: 'Карточки', quiz: 'Тест' },
    summary: 'Краткое содержание',
    generate: 'Создать материалы для учёбы',
    regenerate: 'Создать заново',
    working: 'Создаём',
    ready: 'Материалы для учёбы готовы.',
    failed: 'Не удалось создать',
    none: 'Материалов для учёбы пока нет.',
    counts: (cards, questions) => `Карточек: ${cards} · вопросов: ${questions}`,
    stages: { reading: 'Читаем', sections: 'Читаем разделы', summary: 'Пишем конспект',
      flashcards: 'Пишем карточки и вопросы', saving: 'Сохраняем' },
    due: (due, fresh) => `К повторению: ${due} · новых: ${fresh}`,
    progress: (n, total) => `Карточка ${n} из ${total}`,
    show: 'Показать ответ',
    keySpace: 'Пробел',
    ratings: { again: 'Снова', hard: 'Трудно', good: 'Хорошо', easy: 'Легко' },
    nextDue: (when) => `Следующее повторение: ${when}`,
    allDone: 'На сейчас всё. Возвращайтесь, когда подойдут новые карточки.',
    noneDue: 'Карточек к повторению нет.',
    noQuiz: 'Теста пока нет.',
    question: (n, total) => `Вопрос ${n} из ${total}`,
    true: 'Верно',
    false: 'Неверно',
    yourAnswer: 'Ваш ответ',
    check: 'Проверить',
    correct: 'Верно!',
    wrong: (answer) => `Не совсем: правильный ответ — «${answer}».`,
    next: 'Следующий вопрос',
    finish: 'Мой результат',
    score: (score, total) => `Ваш результат: ${score} из ${total}`,
    again: 'Пройти тест снова',
  },
};

export const CATALOGUES = { en: EN, ru: withFallback(RU, EN) };

function withFallback(catalogue, base) {
  const out = { ...base, ...catalogue };
  for (const [k, v] of Object.entries(base)) {
    if (v && typeof v === 'object') out[k] = { ...v, ...catalogue[k] };
  }
  return out;
}

/**
 * The language of a widget: its `lang` attribute, else the nearest ancestor's (normally the host
 * page's <html lang>), else the browser's preferences. The first language declared on the page
 * decides, English when there is no catalogue for it; the browser's list is searched in order.
 */
export function pickLanguage(element) {
  const declared = element.getAttribute('lang') || element.closest('[lang]:not([lang=""])')?.lang
    || document.documentElement.lang;
  const wanted = declared ? [declared] : [...(navigator.languages || []), navigator.language];
  for (const tag of wanted) {
    const base = String(tag || '').trim().toLowerCase().split(/[-_]/)[0];
    if (Object.hasOwn(CATALOGUES, base)) return base;
  }
  return 'en';
}

/** The server's error, in words of the catalogue when it names the code. */
export function errorText(t, code, message) {
  return (code && Object.hasOwn(t.errors, code) && t.errors[code]) || message || code || t.error;
}
