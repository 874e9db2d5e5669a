"""The rules: what a customer wants from a turn, by hand-written cues (Russian, Kazakh, Russian typed in
Latin letters), and how sure each rule is. `classifier.classify` combines them with the learned model.

Rules for the ambiguous cases (bench/fixtures/intents.jsonl is labelled the same way):
- Asking for a human wins over everything else, and a question form does not change that: "можно
  менеджера?", "менеджермен сөйлесуге бола ма?", "администратор на связи?" are human_request. Asking us
  to call ("позвоните мне", "перезвоните", "хабарласыңыз") is one too; asking how to call us is not.
- Staff mentioned as a topic is not a request: "а менеджер у вас до скольки работает?", "менеджер вчера
  сказал...", "я менеджер компании..." are questions. A headcount is not a person to talk to: "стол на
  6 человек", "5 адамға".
- A negated staff word does not escalate ("менеджера не надо", "без оператора", "менеджер керек емес",
  "не звоните мне"); the rest of the message decides.
- Frustration needs an emotional cue: an evaluative or angry word, a demand for money back, a
  complaint, waiting time ("жду уже час"), an insult to the bot, '!!!'/'???' or shouting. A neutral
  question about a problem ("почему не пришло подтверждение?") is a question; a reproach for a failure
  is frustration ("вы забыли половину заказа", "опять не то привезли", "келмедіңіздер"). Pain and
  desire are not anger: "ужасно болит зуб", "жалобы на боль в колене", "ужасно хочу к вам".
- "ты бот?" alone is frustration at low confidence (the model decides); followed by a real question it
  is that question. Enthusiastic '!!!' with thanks or joy is not frustration; caps from someone who just
  books or greets is not frustration either (low confidence).
- opt_out needs an explicit "stop writing" ("не пишите", "отстаньте", "жазбаңыз", a bare "стоп"), or
  "I need nothing" ("мне ничего не нужно", "маған ештеңе керек емес"). A bare "не надо"/"керек емес" is
  left to the model (often it declines an offer, not the conversation). "Stop writing, answer properly"
  is frustration, and a request for a human beats an opt-out.
- question: '?', a question word or particle, or "подскажите/интересует/айтыңызшы"; a booking
  instruction without one ("запишите меня на 18:00") is other.
Confidence is how sure the rule that fired is (an explicit request 0.95, caps alone 0.6); below 0.7
is_unclear() says a model should decide. bench/intent_bench.py measures the rules, including on
messages written after they were frozen: they catch most escalations, not all; new phrasings of
anger are the usual miss.
"""

import re
from collections.abc import Sequence

from app.intents.labels import IntentResult, IntentSource
from app.models.intent import Intent
from app.utils.text import latin_to_cyrillic

UNCLEAR_BELOW = 0.7


# Kazakh letters typed on a Russian keyboard come as their look-alikes: fold both spellings to one; й, ь
# and ъ are dropped or merged because translit and hurried typing lose them ("zhivoi", "otstante").
_FOLD = (
    ("ә", "а"), ("ғ", "г"), ("қ", "к"), ("ң", "н"), ("ө", "о"), ("ұ", "у"), ("ү", "у"), ("һ", "х"), ("і", "и"),
    ("ё", "е"), ("э", "е"), ("й", "и"),
)  # fmt: skip
_LATIN = re.compile(r"[a-z]")
_REPEATS = re.compile(r"([а-я])\1+")
_DOUBLE = re.compile(r"([а-я])\1")
_NON_WORD = re.compile(r"[\W_]+")


def _fold(text: str) -> str:
    """Kazakh look-alikes, ё/э/й/ь/ъ and doubled letters folded, so "мееенеджер" and "менеджер" meet."""
    for letter, plain in _FOLD:  # str.replace per letter is several times faster than str.translate with a dict
        text = text.replace(letter, plain)
    if _DOUBLE.search(text):
        text = _REPEATS.sub(_first, text)
    return text.replace("ь", "").replace("ъ", "")


def _first(match: re.Match[str]) -> str:
    return match.group(1)


def normalise(text: str) -> str:
    """Lower case, Latin-typed Russian to Cyrillic, letters folded, punctuation to spaces, one space between words."""
    lowered = text.lower()
    if _LATIN.search(lowered):
        lowered = latin_to_cyrillic(lowered)
    folded = _fold(lowered)
    return _NON_WORD.sub(" ", folded).strip()


def _rx(*patterns: str) -> re.Pattern[str]:
    """One compiled alternation starting at a word; patterns are written in plain spelling and folded like the text."""
    return re.compile(r"\b(?:" + "|".join(f"(?:{_fold(p)})" for p in patterns) + ")")


# Single-word cues are looked up by word prefix in one dict (a regex alternation of a hundred stems costs
# tens of µs); phrase regexes run only when one of their cue words is in the message. "stem*" matches any
# word starting with it, a plain entry only the whole word.
_LEXICON_SOURCE: dict[str, str] = {
    "angry": (
        "безобраз* издева* обман* мошен* развел* разводил* кидал* хамств* хамит* нахам* хамло нагруб* грубиян* позор* отврат* бардак "
        "беспредел цирк пожалуюсь претенз* прокуратур* недовол* разочарова* некомпетент* непрофессионал* испорт* испорч* изуродова* "
        "сожгл* ненавиж* надоел* достал достала достали бесит* бесишь возмут* возмущ* наглост* обнаглел* охрене* офигел* задолбал* "
        "пиздец* бля* нахрен нахер нахуй ебан* сука игнор* ұят* алдад* алдау* сұмдық масқара бүлдір* сапасыз ренжі* шағым* ашулан* "
        "қашанғы түсінбейсің* ақымақ* шокирова* стыдоба постыдил* чушь бред бредов* ерунд* перепутали сожж* обсчитал* недовес* "
        "недолож* ұнамады жаловаться пожаловаться криво кривые кривой неаккуратно некачественн* халтур* остыл* "
        "бешенств* взбешен* грубил* грубит* грубят грубо требую"
    ),
    "mild": "ужас* кошмар* жалоб* невыносим* нашар* жаман",  # "ужасно болит зуб" is pain, "жаман емес" praise, "ужасно хочу" desire
    "pain": (
        "боль боли болит болят болело болела болел болью болями больно болезн* больн* температур* кашл* тошн* давлени* сыпь отек* "
        "опух* ауыр* ауру*"
    ),
    "positive": (
        "спасиб* благодар* рахмет* супер отличн* класс классно классный классная круто ура прекрасн* замечательн* здорово молодц* "
        "обожаю люблю понравил* красота керемет* тамаша жақсы рад рада рады поздравля* праздник* құттықта*"
    ),
    "question": (
        "сколько скольки когда где куда откуда как какой какая какое какие каких каким какую почему зачем кто чем ли можно есть почем "
        "подскажите подскажи скажите расскажите уточните интересует интересуют узнать цена цену цены стоимость прайс возможно "
        "қанша қашан қайда қалай қандай неше* неге кім қай ма ме ба бе па пе ше баға* айтыңыз* білгім"
    ),
    "booking": "запиш* запис* забронир* брон* заказ* приду буду жазыл* жазып",
    "opt_out": (
        "отстан* отвали* отвяжит* отпиш* отписат* отписк* спам* жазбаңыз* жазбаңдар жазба мазаламаңыз* мазаламаңдар жібермеңіз* тоқтатыңыз*"
    ),
    "opt_out_cue": "не больше хватит прекратите удалите уберите отключите заблокируйте исключите ничего ештеңе",
    "human_cue": (
        "менедж* менеж* минедж* манадж* манагер* мэнедж* опер* опир* апер* админ* адмін* консультант* сотрудник* руковод* директор* "
        "управляющ* начальств* начальник* человек* чел люд* жив* реальн* нормальн* настоящ* тірі адам* позвон* перезвон* звон* "
        "набер* набрат* звякн* қоңырау хабарлас* сөйлес* байланыс* бот* робот* связ* свяж* соедин* переключ* "
        "старш* главн* хозя* владел* персонал* кто кем кого созвон* звонок звонка обсуд* регистратур* ресепш* әкімші* специалист* "
        "телефону"
    ),
    "angry_cue": (
        "сколько до прав не никогда больше ноль хуже вы никто ни ответьте ответите жду ждем ждём ждал* ждать прождал* күт* час* "
        "полчаса минут* день дня дней сутки недел* сағат күн* верн* деньг* предоплат* оплат* ақша* отношени* суд жауап "
        "второй третий четвертый пятый уже в как вам вас стыдно что ну так мүлдем бұл опять снова лучше неужели опоздал* с со кто "
        "кешеден таңнан бері қашан"
    ),
    "bot": "бот* робот* ассистент* автоответчик* программ* нейросет*",
    "number": (
        "два двух двоих три трех троих четыре четырех четверых пять пяти шесть шести десять десяти двадцать* тридцать* сорок* "
        "пятьдесят сто сколько скольких бір екі үш төрт бес алты жеті сегіз тоғыз он жиырма отыз қырық елу неше қанша"
    ),
    "negation": "не ненадо без никаких емес жоқ шақырмаңыз*",
}


def _build_lexicon() -> tuple[dict[str, frozenset[str]], dict[str, tuple[tuple[str, frozenset[str]], ...]]]:
    """Whole words to tags, and stems bucketed by their first two letters so a word checks only a few."""
    exact: dict[str, set[str]] = {}
    stems: dict[str, set[str]] = {}
    for tag, entries in _LEXICON_SOURCE.items():
        for entry in entries.split():
            target, key = (stems, entry[:-1]) if entry.endswith("*") else (exact, entry)
            target.setdefault(_fold(key), set()).add(tag)
    by_head: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for stem, tags in stems.items():
        by_head.setdefault(stem[:2], []).append((stem, frozenset(tags)))
    return {k: frozenset(v) for k, v in exact.items()}, {k: tuple(v) for k, v in by_head.items()}


_EXACT, _STEMS_BY_HEAD = _build_lexicon()


def _tags(words: Sequence[str]) -> set[str]:
    """The lexicon tags of the message's words."""
    tags: set[str] = set()
    for word in words:
        hit = _EXACT.get(word)
        if hit:
            tags |= hit
        for stem, stem_tags in _STEMS_BY_HEAD.get(word[:2], ()):
            if word.startswith(stem):
                tags |= stem_tags
    return tags


def _any(words: str) -> str:
    """A word list as a regex group: "позов* на_связи" -> (?:позов\\w*|на связи)."""
    return "(?:" + "|".join(w.replace("_", " ").replace("*", r"\w*") for w in words.split()) + ")"


_W = r"(?:\w++ )"  # one word and its space, for "up to N words between"
_STAFF = _any(
    "м[еиа]н[еиа]?д?ж[еиа]?р* манагер* [ао]п[еи]р[ао]т[оа]р* [ао]дмин* консультант* сотрудник* руководител* директор* управляющ* "
    "начальств* начальник* регистратур* ресепш* әкімші*"
)
_LIVE = (
    rf"(?:{_any('жив* реальн* нормальн* настоящ*')} {_any('человек* чел люд* оператор* менеджер* сотрудник*')}"
    r"|к(?:то|ем|ого|ому)(?: то| нибудь| либо)? жив\w*|жив\w* кто|тірі адам\w*)"
)
_PERSON = rf"(?:{_LIVE}|человек(?:а|у|ом)?\b|чел\b|адам\w*|к(?:то|ем|ого|ому)(?: то| нибудь| либо)? из \w+)"
_TARGET = rf"(?:{_STAFF}|{_PERSON})"
# The boss, only after a request verb: "позовите старшего" asks for one, "детям старше 12 можно?" does not.
_BOSS = _any(
    "старш(?:его|ему|им|ий|ая|ую|ей) главн(?:ого|ому|ым|ый|ая|ую|ой) хозя* владел* администрац* персонал* специалист* "
    "кого(?:_то|_нибудь|_либо)"
)

# Removed before looking for a request: a headcount, the customer's own job, a negated staff word or call.
_NUMBER = _any(
    r"\d+ два двух двоих три трех троих четыре четырех четверых пять пяти шесть шести десять десяти двадцать* тридцать* сорок* "
    "пятьдесят сто сколько скольких бір екі үш төрт бес алты жеті сегіз тоғыз он жиырма отыз қырық елу неше қанша"
)
_HEADCOUNT = _rx(rf"{_NUMBER} (?:\w++ )?{_any('человек* чел персон* гост* адам*')}")
_MYSELF = _rx(rf"я (?:\w++ )?{_STAFF}")
# Staff as the subject of what they said or did is a topic: "администратор сказала, что можно прийти в 3".
_STAFF_AS_TOPIC = _rx(
    rf"{_STAFF} (?:\w++ ){{0,2}}"
    + _any("сказал* говорил* писал* обещал* передал* ответил* звонил* предлагал* советовал* работа* делал* сделал* записал* подтвердил*")
)
_NEGATED = _rx(
    rf"(?:не {_any('надо нужно нужен нужна нужны хочу зовите зови звать стоит обязательно')}|ненадо|без|никаких) {_W}{{0,2}}?{_TARGET}",
    rf"{_TARGET} {_W}{{0,2}}?"
    + _any(
        "не_нужен не_нужна не_нужно не_нужны не_надо не_требуется не_обязательно не_зовите керек_емес қажет_емес керек_жоқ керегі_жоқ "
        "қажеті_жоқ шақырмаңыз*"
    ),
    r"не (?:звонит|звоните|позвонит|позвоните|перезванива|перезвонит|перезвоните|набира)\w*",
)
_ACTION = _any("позов* позва* зовите соедин* переключ* перевед* перевест* свяж* пригласит* подключит* передайт*")
_MODAL = _any("нуж[еа]н нужн[оа] надо хочу хотел* желаю требую прошу можно дайте дай жду давайте")
_TALK = _any(
    "поговор* пообщ* побеседо* переговор* обсуд* общат* общени* связат* связь разговар* разговор* перепис* сөйлес* хабарлас* байланыс*"
)
_SKIP_COMPLAINT = r"(?:(?!жалоб|пожалов|претенз|отзыв)\w++ )"  # "хочу оставить жалобу на администратора" is a complaint
_AFTER_TARGET = _any(
    "позов* зовите нуж* надо пожалуйста плиз срочно можно ответ* напиш* позвон* перезвон* свяж* на_связи дайте керек* қажет "
    "шақыр* жазсын жазыңыз* қосыңыз* қосыл* беріңіз* жалғаңыз* бар_ма бар_ба"
)
_HUMAN_STRONG = _rx(
    rf"{_ACTION} {_W}{{0,5}}?(?:{_TARGET}|{_BOSS})",
    rf"{_MODAL} {_SKIP_COMPLAINT}{{0,3}}?(?:{_TARGET}|{_BOSS})",
    rf"{_TALK} {_W}{{0,4}}?(?:{_TARGET}|{_BOSS})",
    rf"{_TARGET} {_W}{{0,4}}?{_TALK}",
    rf"{_TARGET} {_W}{{0,2}}?{_AFTER_TARGET}\b",
    r"с кем (?:\w++ ){0,2}(?:обсуд|поговор|связат|решит|общ|пообщ)\w*",
)
_CALL_ME = _rx(
    _any("перезвон(?:ите|ить|или|ит|и) позвоните позвонить_мне наберите набрать_меня звякните жду_звонка звонок_нуж* звонок_мне")
    + r"\b|созвон\w*",
    r"позвонит\w* (?:мне|нам)\b|(?:мне|нам) (?:\w++ )?(?:позвонит|перезвонит)\w*\b(?! вам| к вам)",
    r"(?:может|можете|могли бы|пусть) (?:\w++ ){0,2}(?:позвонит|перезвонит)\w*",
    r"(?:можно|нужен|жду|закажите|хочу|организуйте) (?:\w++ )?звон(?:ок|ка|ку)\b",
    r"қоңырау шал\w*|хабарласыңыз\w*|звоните мне|(?:свяж\w*|связат\w*) со мной|со мной (?:\w++ )?(?:связ|свяж)\w*",
    r"(?:дайте|скиньте|отправьте|напишите) (?:\w++ )?(?:его|ее|их|личный) (?:номер|телефон|контакт)\w*",
    r"кто (?:у вас )?(?:отвечает|ответственн\w*) за",
    r"(?:поговор|обсуд|связат|пообщ|общ)\w* (?:\w++ ){0,2}по телефону|по телефону (?:\w++ ){0,2}(?:поговор|обсуд|связат|пообщ|общ)\w*",
)
_HUMAN_LIVE = _rx(_LIVE)
_HUMAN_THERE = _rx(
    rf"^(?:а |ну |алло |срочно )?(?:{_STAFF}|{_PERSON})"
    + "(?: "
    + _any("есть у_вас_есть бар_ма бар_ба пожалуйста срочно алло можно где тут здесь там на_месте")
    + ")*$"
)
_NOT_BOT = _rx(
    r"(?:не хочу|не буду|не нужен|без|уберите|отключите|хватит) (?:\w++ ){0,2}(?:бот\w*|робот\w*)", r"бот\w* не нужен", r"ботпен емес"
)

_DURATION = _any("час* полчаса минут* день дня дней сутки недел* сағат күн*")
_ANGRY_PHRASE = _rx(
    r"сколько можно|сколько (?:еще |мне |уже |нам )+ждать|до каких пор|в суд\b|прав потребител\w*|не рекомендую|никогда больше",
    r"больше (?:\w++ ){0,2}не (?:приду|придем|закажу|обращусь|буду)\w*|ноль внимания|хуже некуда",
    r"вы (?:\w++ ){0,2}спит\w*",
    r"вы (?:\w++ )?(?:что|че|чо|вообще|совсем|хоть|там)\b (?:\w++ ){0,2}(?:не )?(?:чита|слыш|понима|отвеча|видит|смотрит)\w*",
    r"(?:никто|ни кто) не \w+|не отвечает\w*|не отвечаете|ответ(?:ьте|ите) (?:уже|наконец|хоть кто|кто нибудь)",
    r"не нравится (?:как|ваш\w*|обслуживан\w*|отношени\w*|результат\w*)|отношени\w* (?:ужасн|отвратит|хамск|наплевательск)\w*",
    rf"{_any('жду ждем ждал* ждать прождал* күттім күтеміз күтіп күтудемін')}\w* (?:\w++ ){{0,3}}?{_DURATION}",
    rf"{_DURATION} (?:\w++ ){{0,2}}(?:жд|кут|күт)\w*",
    r"(?:не могу|не можем|не смогла?|не дозвон|не отвеча|не пришл|не привез|не работает)\w*(?: \w++){0,4} "
    + _any("уже вообще опять снова никак целый весь_день")
    + r"\b",
    r"(?:второй|третий|четвертый|пятый|\d+)(?: \w++)? (?:раз|день|час) (?:\w++ ){0,3}"
    r"(?:не (?:могу|можете|отвеча|дозвон|ответ)|пишу|звоню|жду)\w*",
    r"(?:уже|второй|третий|который) (?:\w++ ){0,2}(?:не могу|не можете) (?:\w++ ){0,2}(?:дозвон|ответ|дождат)\w*",
    r"верн(?:ите|и)\b(?=.*(?:деньг|предоплат|оплат|средств|аванс|сумм|тенге|ақша))",
    r"(?:деньг|предоплат|оплат|ақша)\w* (?:\w++ ){0,3}верн(?:ите|и)\b",
    r"ақшам\w* қайтар\w*|ақшаны қайтар\w*|жауап (?:бермей|бермейсі|жоқ)\w*|мүлдем ұнама\w*|бұл не деген|қашан жауап",
    r"в шоке|(?:вам|вас) не стыдно|стыдно (?:должно|вам)|ни ногой|ни в какие ворота|так и не \w+|не (?:перезвонил|предупредил)\w*",
    r"что за (?:отношени|сервис|обслуживани|безобрази|бардак|дела|хамств|работ)\w*|ну и (?:сервис|обслуживани|отношени|работ)\w*",
    r"вы (?:\w++ )?(?:не )?(?:забыли|перепутали|опоздали|потеряли|сломали|обещали)\b|вы (?:что )?серьезно",
    r"(?:опять|снова) (?:\w++ ){0,2}(?:не то|не так|не тот|не ту|перепут|забыл|опозд|ошиб)\w*",
    r"как так\b|лучше бы (?:\w++ ){0,3}не\b|неужели (?:так )?(?:сложно|трудно)",
    r"так сложно (?:\w++ )?(?:ответить|сделать|позвонить|написать)",
    r"в ярости|вы (?:\w++ )?жив(?:ые|ы)\b|кто (?:\w++ ){0,2}ответит\b",
    r"(?<!я )опоздал\w* на (?:\w++ )?(?:час|полчаса|минут)\w*",
    r"(?:с утра|со вчера|с вечера|с обеда|кешеден|таңнан|бері) (?:\w++ ){0,3}(?:жд|кут|күт)\w*",
    r"(?:жд|күт)\w* (?:\w++ ){0,3}(?:с утра|со вчера|с обеда|кешеден|таңнан)",
)
# Kazakh "you did not ..." (келмедіңіздер, жауап бермедіңіз, хабарласпадыңыз) is a reproach.
_KK_YOU_DID_NOT = re.compile(_fold(r"\w(?:ма|ме|ба|бе|па|пе)(?:ды|ді|ты|ті)(?:ңыз|ңіз|ңдар|ңдер)"))
_MILD_NEGATED = _rx(
    r"жаман емес\b|жалоб\w* (?:нет|никаких)|(?:нет|без|никаких) жалоб",
    r"(?:ужасно|кошмарно) " + _any("хоч* хот* устал* рад* нрав* люб* соскуч* интерес* красив* вкусн* бол* бою* волну* нужн* надо* доволь*"),
)
_BOT = _any("бот* робот* ассистент* автоответчик* программ* нейросет*")
_INSULT = _any("туп* глуп* бесполез* идиот* дурак* дебил* бестолков* тормоз* никчем* ақымақ*")
_BOT_INSULT = _rx(rf"{_INSULT} (?:\w++ )?{_BOT}", rf"{_BOT} (?:\w++ )?{_INSULT}", rf"{_BOT} (?:\w++ ){{0,2}}не (?:понима|помога|может)\w*")
_ARE_YOU_BOT = _rx(
    r"(?:ты|вы|это|сен|сіз|мне отвечает|с кем я) (?:\w++ )?(?:бот|робот)\w*"
    + "(?: "
    + _any("что_ли чтоли или_нет или_человек да па ба ма ғой отвечает")
    + ")*",
    r"(?:ты|вы|сен|сіз) (?:\w++ )?(?:человек|живой|адам\w*) или (?:бот|робот|программа|нет)\b",
    r"с (?:ботом|роботом) (?:\w++ )?(?:разговар|общ|переписыва|говор)\w*",
)
_OPT_OUT_PHRASE = _rx(
    r"не " + _any("пишите пиши присылайте присылай отправляйте беспокойте беспокой тревожьте надоедайте интересно интересует") + r"\b",
    r"больше не (?:пиш|присыл|отправл|беспок)\w*|хватит (?:мне |нам )?(?:писать|присылать|слать|спамить|отправлять|названивать)",
    r"прекратите (?:\w++ )?(?:писать|присылать|слать|рассылк\w*|спам\w*|отправлять)",
    r"удалите (?:\w++ ){0,2}(?:номер|контакт|из баз|из рассылк)\w*|уберите (?:\w++ ){0,2}(?:из рассылк|номер|из баз)\w*",
    r"(?:ничего|ештеңе) (?:\w++ )?(?:не надо|не нужно|керек емес|қажет емес|керегі жоқ)|хабарлама (?:\w++ )?жібермеңіз\w*",
    r"больше не (?:нужно|надо|нужны)|(?:не надо|не нужно) (?:\w++ )?ничего",
    r"(?:не нужно|не надо|не нужны|не присылайте|не отправляйте|отключите|уберите) (?:\w++ ){0,2}"
    + _any("напоминан* уведомлен* сообщени* рассылк* реклам* смс* спам*"),
    r"не (?:надо|нужно) (?:\w++ ){0,2}(?:предлагать|писать|присылать|слать|отправлять)",
    r"(?:заблокир|исключит)\w* (?:\w++ ){0,2}(?:номер|рассылк|баз)\w*",
)
_WANTS_ANSWER = _rx(r"ответ(?:ьте|ите|ь|ай|айте)\b|отвечайте\b|жауап беріңіз")


def _words(*groups: str) -> frozenset[str]:
    return frozenset(_fold(w) for group in groups for w in group.split())


_STOP_WORDS = _words("стоп хватит достаточно жетер болды тоқта тоқтаңыз")
_STOP_FILLERS = _words("все всё уже пожалуйста нет спасибо рахмет")
_GREETING_WORDS = _words(
    "привет приветик приветствую здравствуйте здравствуй здрасте здрасьте добрый доброе доброго день вечер утро утра дня времени суток",
    "салам саламатсыз сәлем сәлеметсіз салем салеметсиз бе ассалаумағалейкум ассаламуалейкум алейкум уалейкум хай хелло хеллоу хи",
    "қайырлы таң кеш күн сәлеметсіздер ме",
    "девушки девочки ребята уважаемые всем вам как дела ваши поживаете қалыңыз қалай жағдайыңыз хал",
)
_PING_WORDS = _words("алло ало ау эй ну и есть кто нибудь то вы где тут там здесь живы бар ма кім ответьте ответь жду хелло")
_DECLINE_WORDS = _words("нет не надо нужно спасибо керек емес қажет жоқ рахмет мне маған")
_DECLINE_WORDS_WEAK = _words("нет не спасибо рахмет жоқ мне маған")  # a plain "нет" answers the bot's question
_SHOUT_WORD = re.compile(r"\b[^\W\d_]{4,}\b")
_MARK_RUN = re.compile(r"[!?]{3,}")


def classify_heuristic(text: str) -> IntentResult:
    """Fast rules: what the customer wants and how sure the rule is."""
    raw = text.strip()
    norm = normalise(raw)
    marks = bool(_MARK_RUN.search(raw)) or raw.count("!") >= 3 or "?!" in raw or "!?" in raw
    if not norm:  # punctuation or emoji only: "???" after a silence is impatience
        return IntentResult(Intent.FRUSTRATION, 0.6) if marks else IntentResult(Intent.OTHER, 0.7)
    words = norm.split()
    tags = _tags(words)
    if "human_cue" in tags:
        human = _human_confidence(_request_part(norm, words, tags), len(words))
        if human:
            return IntentResult(Intent.HUMAN_REQUEST, human)
    if "opt_out" in tags or ("opt_out_cue" in tags and _OPT_OUT_PHRASE.search(norm)) or _bare_stop(words):
        if _WANTS_ANSWER.search(norm):  # "stop sending the same thing, answer properly" wants more, not less
            return IntentResult(Intent.FRUSTRATION, 0.75)
        return IntentResult(Intent.OPT_OUT, 0.9)
    shouting = _shouting(raw)
    if _angry(norm, tags):
        return IntentResult(Intent.FRUSTRATION, 0.9 if shouting or marks else 0.85)
    is_question = "?" in raw or "question" in tags
    if "bot" in tags and _ARE_YOU_BOT.search(norm):
        if "question" in _tags(_ARE_YOU_BOT.sub(" ", norm).split()):  # "это бот? подскажите цены" is about prices
            return IntentResult(Intent.QUESTION, 0.75)
        return IntentResult(Intent.FRUSTRATION, 0.65)
    if _GREETING_WORDS.issuperset(words):
        return IntentResult(Intent.GREETING, 0.8 if shouting or marks else 0.9)
    if (shouting or marks) and "positive" not in tags:
        if _PING_WORDS.issuperset(words):
            return IntentResult(Intent.FRUSTRATION, 0.7)
        if (is_question and len(words) >= 3) or "booking" in tags:  # an impatient question or booking, maybe just caps lock
            return IntentResult(Intent.QUESTION if is_question else Intent.OTHER, 0.6)
        return IntentResult(Intent.FRUSTRATION, 0.7 if shouting and marks else 0.6)
    if is_question:
        return IntentResult(Intent.QUESTION, 0.85)
    if _DECLINE_WORDS.issuperset(words) and not _DECLINE_WORDS_WEAK.issuperset(words):
        return IntentResult(Intent.OTHER, 0.6)  # a bare "не надо"/"керек емес" may decline an offer or the whole chat
    return IntentResult(Intent.OTHER, 0.7)


def _request_part(norm: str, words: Sequence[str], tags: set[str]) -> str:
    """The message without headcounts, the customer's own job, negated staff words and "не звоните"."""
    if "number" in tags or any(w.isdigit() for w in words):
        norm = _HEADCOUNT.sub(" ", norm)
    if "я" in words:
        norm = _MYSELF.sub(" ", norm)
    norm = _STAFF_AS_TOPIC.sub(" ", norm)
    if "negation" in tags:
        norm = _NEGATED.sub(" ", norm)
    return norm


def _human_confidence(request: str, words: int) -> float:
    """How sure a request for a person is, 0 when there is none; negations and headcounts are already removed."""
    if _HUMAN_STRONG.search(request) or _CALL_ME.search(request):
        return 0.95 if words <= 12 else 0.9
    if _HUMAN_LIVE.search(request):
        return 0.9
    if _HUMAN_THERE.search(request.strip()):
        return 0.85
    if _NOT_BOT.search(request):
        return 0.8
    return 0.0


def _angry(norm: str, tags: set[str]) -> bool:
    """An angry word or phrase, an insult to the bot; "ужас"/"жалоба" only when not about pain."""
    if "angry" in tags:
        return True
    if "mild" in tags and "pain" not in tags and not _MILD_NEGATED.search(norm):
        return True
    if "angry_cue" in tags and _ANGRY_PHRASE.search(norm):
        return True
    if _KK_YOU_DID_NOT.search(norm):
        return True
    return "bot" in tags and bool(_BOT_INSULT.search(norm))


def _bare_stop(words: Sequence[str]) -> bool:
    """ "Стоп", "хватит уже", "болды": a stop word with nothing but fillers around it."""
    return len(words) <= 4 and any(w in _STOP_WORDS for w in words) and all(w in _STOP_WORDS or w in _STOP_FILLERS for w in words)


def _shouting(text: str) -> bool:
    """At least two words of four letters or more in capitals, most letters upper case: not "ОК" or "СПА"."""
    long_caps = sum(1 for w in _SHOUT_WORD.findall(text) if w.isupper())
    if long_caps < 2:
        return False
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) >= 0.7 * len(letters)


def is_unclear(result: IntentResult) -> bool:
    """Worth a model call: a weak rule fired (caps or '???' alone, "ты бот?", an impatient question)."""
    return result.source is IntentSource.HEURISTIC and result.confidence < UNCLEAR_BELOW
