"""The learned intent classifier beside the rules: its corpus, its training command, and the decisions a
customer or manager would notice (who gets a manager, who is left alone, who gets an answer)."""

import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from _pytest.mark.structures import ParameterSet

from app.intents import (
    ClientExamples,
    Decision,
    Intent,
    IntentModel,
    Neighbour,
    Thresholds,
    classify,
    corpus,
    decide,
    read_csv,
    shipped,
    train,
)
from app.intents.embedding import embed, embed_many
from app.intents.labels import INTENTS, IntentResult, IntentSource, Lang, Split
from app.services.knowledge.embeddings import E5Embedder

# None of these texts is in the corpus (checked below): the table measures what the model learned, not what it saw.
HARD_CASES = [
    # negation: a staff word that is declined is not a request
    ("не нужен мне администратор, скажите только цену на окрашивание", Intent.QUESTION),
    ("менеджерді шақырудың керегі жоқ, жұмыс уақытын айтыңызшы", Intent.QUESTION),
    ("ne nado menedzhera, skazhite cenu na strizhku", Intent.QUESTION),
    ("не надо менеджера, просто скажите сколько стоит педикюр", Intent.QUESTION),
    ("менеджера звать не надо, во сколько вы завтра открываетесь?", Intent.QUESTION),
    ("не надо менеджера, спасибо, всё понятно", Intent.THANKS),
    # staff as a topic
    ("ваша администратор Айжан сегодня до скольки работает?", Intent.QUESTION),
    ("мне вчера ваш менеджер всё объяснила, спасибо ей", Intent.THANKS),
    # indirect requests for a person
    ("а можно чтобы со мной кто-то из людей поговорил?", Intent.HUMAN_REQUEST),
    ("перезвоните мне после обеда пожалуйста", Intent.HUMAN_REQUEST),
    ("скиньте номер администратора, сама наберу", Intent.HUMAN_REQUEST),
    ("pozovite administratora pozhaluysta", Intent.HUMAN_REQUEST),
    # complaints without angry words
    ("мастер пришла на 40 минут позже записи", Intent.FRUSTRATION),
    ("мне испортили маникюр, лак облез на следующий день", Intent.FRUSTRATION),
    ("почему в итоге так дорого получилось?", Intent.FRUSTRATION),
    ("четвёртый день жду ответа по возврату", Intent.FRUSTRATION),
    ("тапсырысымды үш сағат күттім, әлі жоқ", Intent.FRUSTRATION),
    # sarcasm, and thanks after a complaint
    ("ну спасибо, прекрасный сервис, третий раз путаете заказ", Intent.FRUSTRATION),
    ("браво, опять забыли про мою запись", Intent.FRUSTRATION),
    ("спасибо, конечно, но мы прождали горячее целый час", Intent.FRUSTRATION),
    ("рахмет әрине, бірақ тапсырысты үш сағат күттік", Intent.FRUSTRATION),
    ("спасибо конечно, но ногти облезли через два дня", Intent.FRUSTRATION),
    ("рахмет, бірақ курьер бір сағат кешікті", Intent.FRUSTRATION),
    # "стоп" inside a longer sentence, a bare "стоп", declining an offer
    ("стоп, я не то время написала, мне на 16:00 в четверг", Intent.BOOKING),
    ("стоп, подождите, я уточню у мужа и напишу", Intent.OTHER),
    ("стоп, я перепутала, мне на пятницу к 5", Intent.BOOKING),
    ("стоп, а доставка у вас бесплатная?", Intent.QUESTION),
    ("стоп!!", Intent.OPT_OUT),
    ("больше не присылайте мне акции", Intent.OPT_OUT),
    ("нет, спасибо, пакет не нужен", Intent.OTHER),
    ("нет спасибо, доп услуги не нужны", Intent.OTHER),
    # quoting someone else's words
    ("в рассылке вы писали «позвоните администратору», а до скольки она работает?", Intent.QUESTION),
    ("подруга сказала «просто позовите менеджера», но мне только узнать адрес", Intent.QUESTION),
    ('подруга мне написала "не пишите им больше", но я хочу записаться на пятницу', Intent.BOOKING),
    pytest.param(
        "муж говорит «позовите менеджера», а я просто хочу узнать цену",
        Intent.QUESTION,
        marks=pytest.mark.xfail(strict=True, reason="known miss: the rule fires on the quote and the model follows it (escalate 0.73)"),
    ),
    # booking versus a question about booking
    ("как у вас можно записаться, через сайт?", Intent.QUESTION),
    ("запишите меня на чистку лица в субботу", Intent.BOOKING),
]


@pytest.fixture(scope="module")
def lines() -> list[corpus.Example]:
    return corpus.load()


@pytest.mark.parametrize(("text", "expected"), HARD_CASES)
def test_hard_cases_with_the_shipped_model(text: str, expected: Intent) -> None:
    decision = classify(text)
    assert decision.intent == expected, decision.as_dict()


def test_hard_cases_are_not_in_the_corpus(lines: list[corpus.Example]) -> None:
    known = {corpus.key(e.text) for e in lines}
    texts = [case.values[0] if isinstance(case, ParameterSet) else case[0] for case in HARD_CASES]
    assert [text for text in texts if corpus.key(str(text)) in known] == []


# --- the corpus ---------------------------------------------------------------------------------


def test_corpus_is_valid(lines: list[corpus.Example]) -> None:
    assert corpus.problems(lines, not_in=corpus.fixture_texts()) == []
    assert len(lines) >= corpus.MIN_LINES
    assert {e.label for e in lines} == set(INTENTS)


def test_corpus_test_split_is_a_stratified_fifth(lines: list[corpus.Example]) -> None:
    strata = Counter((e.label, e.lang) for e in lines)
    tests = Counter((e.label, e.lang) for e in lines if e.split == Split.TEST)
    for stratum, size in strata.items():
        if size >= 10:
            assert 0.15 <= tests[stratum] / size <= 0.25, stratum
    test = [e for e in lines if e.split == Split.TEST]
    assert {e.label for e in test} == set(INTENTS)
    assert {e.lang for e in test} == set(Lang)


def test_corpus_check_refuses_duplicates_and_fixture_lines(lines: list[corpus.Example]) -> None:
    first = lines[0]
    twin = corpus.Example(first.text.upper() + "!!", first.label, first.lang, first.topic, Split.TEST)
    assert any("duplicate" in p for p in corpus.problems([*lines, twin]))
    fixture = corpus.fixture_texts()[0]
    assert any("old fixture" in p for p in corpus.problems(lines, not_in=[fixture, first.text]))


def test_assigning_splits_never_moves_an_existing_line(lines: list[corpus.Example]) -> None:
    new = [corpus.Example(f"новая строка номер {i}", Intent.OTHER, Lang.RU, lines[0].topic) for i in range(10)]
    assigned = corpus.assign_splits([*lines, *new])
    assert [e.split for e in assigned[: len(lines)]] == [e.split for e in lines]
    assert Counter(e.split for e in assigned[len(lines) :]) == {Split.TRAIN: 8, Split.TEST: 2}


# --- the shipped model ----------------------------------------------------------------------------


def test_shipped_model_is_small_and_trained_on_the_current_corpus(lines: list[corpus.Example]) -> None:
    model = shipped()
    assert os.path.getsize(corpus.CORPUS_DIR.parent / "model.npz") < 2 * 1024 * 1024
    assert model.embedder == E5Embedder.name
    assert model.meta["corpus"] == corpus.fingerprint(e for e in lines if e.split == Split.TRAIN), "retrain: python -m app.intents.train"


def test_turn_embedding_is_reused_as_is() -> None:
    text = "сколько стоит стрижка"
    vector = embed(text)
    assert np.allclose(vector, embed_many([text], cache_dir=None)[0], atol=1e-6)
    assert classify(text, embedding=vector).probabilities == classify(text).probabilities


def test_ngram_features_are_the_same_in_every_process() -> None:
    code = "from app.intents.features import ngrams, FeatureSpec; v = ngrams('zapishite na 5', FeatureSpec()); print(list(v.nonzero()[0]))"
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        for seed in ("1", "2")
    ]
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.strip() != "[]"


def test_json_says_which_path_decided() -> None:
    by_model = classify("мастер пришла на 40 минут позже записи").as_dict()
    assert by_model["decided_by"] == "model" and by_model["escalate"] is True
    assert set(by_model["probabilities"]) == set(INTENTS) and abs(sum(by_model["probabilities"].values()) - 1) < 1e-3
    by_rule = classify("вы издеваетесь? жду ответа третий час").as_dict()
    assert by_rule["decided_by"] == "heuristic" and by_rule["rule"]["intent"] == "frustration"


# --- the training command -------------------------------------------------------------------------


def test_training_command_on_a_small_sample(tmp_path) -> None:
    out = tmp_path / "model.npz"
    assert train.main(["--sample", "120", "--folds", "2", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    model = IntentModel.load(out)
    assert model.classes == INTENTS and model.meta["lines"] == 120
    assert classify("позовите администратора пожалуйста", model=model).escalate
    assert not classify("сколько стоит стрижка?", model=model).escalate
    assert (tmp_path / "cache").exists()


# --- decide: the combination itself, with made-up probabilities -------------------------------------

THRESHOLDS = Thresholds(
    rule={Intent.FRUSTRATION: 0.6, Intent.OPT_OUT: 0.9},
    rule_veto=0.05,
    escalate=0.5,
    opt_out=0.6,
    escalate_unclear=0.2,
    opt_out_unclear=0.2,
    settled=0.5,
)


def decided(text: str, rule: tuple[str, float], neighbours: tuple[Neighbour, ...] = (), **probabilities: float) -> Decision:
    """decide() on a made-up rule result and model probabilities (classes not named share the rest)."""
    rest = (1 - sum(probabilities.values())) / (len(INTENTS) - len(probabilities))
    model = {i: probabilities.get(str(i), rest) for i in INTENTS}
    return decide(text, heuristic=IntentResult(Intent(rule[0]), rule[1]), probabilities=model, thresholds=THRESHOLDS, neighbours=neighbours)


def test_a_strong_rule_wins_over_the_model() -> None:
    decision = decided("не пишите мне", ("opt_out", 0.9), opt_out=0.3, question=0.6)
    assert (decision.intent, decision.decided_by) == (Intent.OPT_OUT, IntentSource.HEURISTIC)


def test_a_weak_rule_or_a_rule_class_not_chosen_leaves_it_to_the_model() -> None:
    weak = decided("???", ("frustration", 0.55), question=0.9)
    not_chosen = decided("...", ("human_request", 0.95), question=0.9)
    assert weak.intent == not_chosen.intent == Intent.QUESTION


def test_the_model_vetoes_a_rule_it_is_sure_is_wrong() -> None:
    decision = decided("спасибо, больше ничего не нужно", ("opt_out", 0.9), opt_out=0.01, thanks=0.95)
    assert decision.intent == Intent.THANKS


def test_a_rule_that_fired_on_a_quote_does_not_win() -> None:
    decision = decided("вы писали «стоп — чтобы отписаться», а как попасть на акцию?", ("opt_out", 0.9), opt_out=0.15, question=0.7)
    assert (decision.intent, decision.decided_by) == (Intent.QUESTION, IntentSource.MODEL)


def test_escalation_sums_both_escalate_classes() -> None:
    decision = decided("...", ("other", 0.7), human_request=0.2, frustration=0.35, question=0.3)
    assert decision.intent == Intent.FRUSTRATION and decision.escalate


def test_a_plausible_escalation_below_its_threshold_is_unclear() -> None:
    decision = decided("...", ("question", 0.85), frustration=0.3, question=0.6)
    assert (decision.intent, decision.unclear) == (Intent.QUESTION, True)
    assert decided("...", ("question", 0.85), frustration=0.1, question=0.8).unclear is False
    assert decided("...", ("other", 0.7), question=0.4, booking=0.35).unclear is True  # no answered class is likely enough


def test_a_near_identical_client_example_overrules_rule_and_model() -> None:
    near = (Neighbour("позвоните когда машина будет готова", Intent.OTHER, 0.98),)
    decision = decided("позвоните как машина будет готова", ("frustration", 0.85), near, human_request=0.8)
    assert (decision.intent, decision.decided_by) == (Intent.OTHER, IntentSource.CLIENT_EXAMPLES)
    far = (Neighbour("позвоните когда машина будет готова", Intent.OTHER, 0.9),)
    assert decided("позовите менеджера", ("other", 0.7), far, human_request=0.8).intent == Intent.HUMAN_REQUEST


# --- a client's own examples ----------------------------------------------------------------------


def test_client_examples_correct_a_paraphrase_and_leave_the_rest() -> None:
    csv = 'text,label\n"позвоните когда машина будет готова, заберу",other\nнаберите как закончите с машиной,other\n'
    examples = ClientExamples.build(read_csv(csv), embed_many)
    assert classify("позвоните как машина будет готова").intent == Intent.HUMAN_REQUEST  # the base model alone escalates it
    corrected = classify("позвоните как машина будет готова", examples=examples)
    assert (corrected.intent, corrected.decided_by) == (Intent.OTHER, IntentSource.CLIENT_EXAMPLES)
    assert classify("позвоните мне, хочу пожаловаться на мастера", examples=examples).escalate
    assert classify("позовите менеджера", examples=examples).intent == Intent.HUMAN_REQUEST


def test_client_csv_errors_name_the_line() -> None:
    assert read_csv('"стоп, я ошиблась, мне на пятницу",booking\n\nок,other\n') == [
        ("стоп, я ошиблась, мне на пятницу", Intent.BOOKING),
        ("ок", Intent.OTHER),
    ]
    with pytest.raises(ValueError, match="line 2: unknown label 'angry'"):
        read_csv("text,label\nужас,angry\n")
    with pytest.raises(ValueError, match="line 1: expected two columns"):
        read_csv("стоп, не пишите,opt_out\n")
    with pytest.raises(ValueError, match="line 1: empty text"):
        read_csv(" ,other\n")
