"""Text helpers shared by the messengers."""

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
