"""Text helpers: splitting and cutting for the messengers, and reading Latin-typed Russian and Kazakh."""

import re

# Cut points: after a sentence end, or at line breaks. The separator is kept so paragraphs survive.
_CUT = re.compile(r"((?<=[.!?…])[ \t]+|\n+)")


def split_text(text: str, limit: int = 4096) -> list[str]:
    """Split text into parts of at most `limit` characters, cutting at paragraph or sentence ends."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts: list[str] = []
    current = ""
    tokens = _CUT.split(text)
    for sentence, separator in zip(tokens[::2], [*tokens[1::2], ""], strict=True):
        for piece in _hard_cut(sentence, limit):
            if current and len(current) + len(piece) > limit:
                parts.append(current.strip())
                current = ""
            current += piece
        current += separator
    if current.strip():
        parts.append(current.strip())
    return parts


def _hard_cut(sentence: str, limit: int) -> list[str]:
    """A sentence longer than the limit is cut at its last space below it, or hard."""
    out = []
    while len(sentence) > limit:
        cut = sentence.rfind(" ", 0, limit)
        cut = cut if cut > limit // 2 else limit
        out.append(sentence[:cut])
        sentence = sentence[cut:]
    out.append(sentence)
    return out


def truncate(text: str, limit: int) -> str:
    """Cut text to at most `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Russian and Kazakh typed in Latin letters ("zhivoi chelovek", "skolko stoit manikur", "obmanuli s cenoi"),
# read back as Cyrillic. The chat habits, not a standard: c is ц and x is х (as the letters look), y after a
# vowel is й. Digraphs first, longest first; "ts" is not one (otstante, svyazhites: т and с side by side).
_LATIN_DIGRAPHS = (
    ("shch", "щ"), ("sch", "щ"), ("dzh", "дж"), ("dj", "дж"), ("zh", "ж"), ("kh", "х"), ("ch", "ч"), ("sh", "ш"),
    ("yu", "ю"), ("ya", "я"), ("yo", "ё"), ("ye", "е"),
)  # fmt: skip
_LATIN_LETTERS = str.maketrans("abcdefghijklmnopqrstuvwxyz", "абцдефгхижклмнопкрстуввхыз")
_LATIN_Y_AFTER_VOWEL = re.compile(r"(?<=[aeiou])y")


def latin_to_cyrillic(text: str) -> str:
    """Lower-case text typed in Latin letters as the Cyrillic it stands for: "zhivoi chelovek" -> "живои человек"."""
    text = _LATIN_Y_AFTER_VOWEL.sub("й", text)
    for latin, cyrillic in _LATIN_DIGRAPHS:
        text = text.replace(latin, cyrillic)
    return text.translate(_LATIN_LETTERS)
