"""A client's services list (name, aliases, duration, price): read from the operator's YAML, matched against a
customer's words, and written out as the one true line for each service. Pure: the rows are in store.py.

The YAML is a list of services, or {currency: тг, services: [...]}:

    - name: Маникюр
      aliases: [маник, ногти, manicure]
      duration: 60          # minutes
      price: 8000           # or "8000-12000", or omitted: a person gives the price
"""

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import yaml

from app.utils.errors import BadRequest
from app.utils.text import latin_to_cyrillic

_WORD = re.compile(r"[^\W_]+")
_RANGE = re.compile(r"^\s*(\d[\d\s]*)\s*(?:-|–|—|до)\s*(\d[\d\s]*)\s*$")
MAX_SERVICES = 500


@dataclass(frozen=True)
class Entry:
    name: str
    aliases: tuple[str, ...] = ()
    duration_minutes: int | None = None
    price: int | None = None
    price_max: int | None = None
    currency: str = "тг"
    id: uuid.UUID | None = None

    @property
    def price_text(self) -> str | None:
        """ "8 000 тг", "8 000–12 000 тг"; None when the list gives no price."""
        if self.price is None:
            return None
        if self.price_max is not None and self.price_max != self.price:
            return f"{_money(self.price)}–{_money(self.price_max)} {self.currency}"
        return f"{_money(self.price)} {self.currency}"

    @property
    def line(self) -> str:
        """The service as the list says it: "Маникюр — 8 000 тг, 60 мин"."""
        facts = [self.price_text or "цену уточняет администратор"]
        if self.duration_minutes:
            facts.append(f"{self.duration_minutes} мин")
        return f"{self.name} — {', '.join(facts)}"

    def allows(self, amount: int) -> bool:
        """Whether a price said for this service is the list's (within its range)."""
        if self.price is None:
            return False
        return self.price <= amount <= (self.price_max or self.price)


@dataclass(frozen=True)
class Catalog:
    entries: tuple[Entry, ...] = ()
    _keys: tuple[tuple[tuple[str, ...], Entry], ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, entries: list[Entry] | tuple[Entry, ...]) -> "Catalog":
        keys = [(_stems(key), entry) for entry in entries for key in (entry.name, *entry.aliases) if _stems(key)]
        keys.sort(key=lambda item: -len(item[0]))  # "маникюр с покрытием" before "маникюр"
        return cls(tuple(entries), tuple(keys))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def find(self, text: str) -> list[Entry]:
        """The services the text names, the most specific mention first, each once."""
        words = words_of(text)
        found: list[Entry] = []
        for stems, entry in self._keys:
            if entry not in found and all(any(word.startswith(stem) for word in words) for stem in stems):
                found.append(entry)
        return found

    def mentions(self, text: str) -> list[tuple[int, Entry]]:
        """Where in the text each service it names is first mentioned (character offsets), in order."""
        words = [(m.start(), m.group(0)) for m in _WORD.finditer(text.lower().replace("ё", "е"))]
        found: dict[Entry, int] = {}
        for stems, entry in self._keys:
            if entry in found:
                continue
            starts = [next((at for at, word in words if word.startswith(stem)), None) for stem in stems]
            if starts and all(at is not None for at in starts):
                found[entry] = min(at for at in starts if at is not None)
        return sorted(((at, entry) for entry, at in found.items()), key=lambda item: item[0])

    def best(self, text: str) -> Entry | None:
        found = self.find(text)
        return found[0] if found else None

    def get(self, service_id: uuid.UUID | None) -> Entry | None:
        return next((entry for entry in self.entries if entry.id == service_id), None) if service_id else None

    def names(self, limit: int = 6) -> list[str]:
        return [entry.name for entry in self.entries[:limit]]


NO_SERVICES = Catalog()


def words_of(text: str) -> list[str]:
    """Lower-case words, ё as е, Latin-typed Russian read as Cyrillic."""
    lowered = text.lower().replace("ё", "е")
    if re.search(r"[a-z]", lowered):
        lowered = lowered + " " + latin_to_cyrillic(lowered)  # "manicure" may be an alias as it is, too
    return _WORD.findall(lowered)


def _stems(key: str) -> tuple[str, ...]:
    """A name's words cut to stems so the customer's case endings meet them: маникюр -> маник, ресниц -> ресн."""
    return tuple(word if len(word) <= 4 else word[: max(4, len(word) - 2)] for word in words_of(key) if len(word) > 2 or word.isdigit())


def parse_yaml(text: str) -> list[Entry]:
    """The services of an operator's YAML file; BadRequest naming the entry that is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BadRequest(f"not valid YAML: {exc}") from exc
    currency = "тг"
    if isinstance(data, dict):
        currency = str(data.get("currency") or currency)[:8]
        data = data.get("services")
    if not isinstance(data, list) or not data:
        raise BadRequest("expected a list of services (each with a name), or {services: [...]}")
    if len(data) > MAX_SERVICES:
        raise BadRequest(f"at most {MAX_SERVICES} services")
    entries: list[Entry] = []
    seen: set[str] = set()
    for number, item in enumerate(data, 1):
        entry = _entry(item, number, currency)
        if entry.name.lower() in seen:
            raise BadRequest(f"service {number}: '{entry.name}' is listed twice")
        seen.add(entry.name.lower())
        entries.append(entry)
    return entries


def _entry(item: Any, number: int, currency: str) -> Entry:
    if not isinstance(item, dict) or not str(item.get("name") or "").strip():
        raise BadRequest(f"service {number}: each service needs a name")
    name = str(item["name"]).strip()[:200]
    aliases = item.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [a.strip() for a in aliases.split(",")]
    if not isinstance(aliases, list):
        raise BadRequest(f"service {number} ({name}): aliases must be a list")
    duration = item.get("duration", item.get("duration_minutes"))
    if duration is not None and (not isinstance(duration, int) or not 0 < duration <= 24 * 60):
        raise BadRequest(f"service {number} ({name}): duration is minutes, e.g. 60")
    price, price_max = _price(item.get("price"), number, name)
    if item.get("price_max") is not None:
        price_max = _amount(item["price_max"], number, name)
    if price is not None and price_max is not None and price_max < price:
        raise BadRequest(f"service {number} ({name}): the price range ends below its start")
    return Entry(name, tuple(str(a).strip() for a in aliases if str(a).strip()), duration, price, price_max, currency)


def _price(raw: Any, number: int, name: str) -> tuple[int | None, int | None]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None, None
    if isinstance(raw, str):
        match = _RANGE.match(raw)
        if match:
            return _amount(match.group(1), number, name), _amount(match.group(2), number, name)
    return _amount(raw, number, name), None


def _amount(raw: Any, number: int, name: str) -> int:
    text = str(raw).replace(" ", "").replace("\u00a0", "")
    if isinstance(raw, bool) or not text.isdigit():
        raise BadRequest(f"service {number} ({name}): price must be a number of tenge, e.g. 8000 or '8000-12000'")
    return int(text)


def _money(amount: int) -> str:
    return f"{amount:,}".replace(",", " ")
