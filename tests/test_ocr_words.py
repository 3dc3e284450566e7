"""Words misread by a look-alike letter, set right from wordfreq's real word lists
(edge_agent/ocr_words.py); through the daemon in test_ocr.py."""
from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, load_config
from edge_agent.ocr_layout import Box
from edge_agent.ocr_words import WordCorrector, WordListError, correct_boxes, word_list_file


@pytest.fixture(scope="module")
def english():
    return WordCorrector("en")


@pytest.mark.parametrize("read, meant", [
    ("immedlately", "immediately"),  # l for i
    ("Tttle", "Title"),  # t for i, title case kept
    ("TOTAI", "TOTAL"),  # upper case kept
    ("confidentlal,", "confidential,"),  # punctuation around it kept
    ("(Enciosed)", "(Enclosed)"),
    ("Sealtle", "Seattle"),
    ("browu", "brown"),  # n read as u
    ("Partland", "Portland"),  # o read as a
    ("noté", "note"),  # a stray accent on an English word
    ("francísco", "francisco"),
])
def test_a_word_misread_by_one_look_alike_letter_is_set_right(english, read, meant):
    assert english.word(read) == meant


@pytest.mark.parametrize("word", [
    "the", "Kuala", "tunneling", "Johor",  # in the list (names and spellings too): never changed
    "iPhone", "McDonaId",  # mixed case: a name or a code, left alone
    "A12B", "12.50", "4711-B", "RM",  # not letters only, or too short
    "xqzvvk",  # no look-alike swap gives a word
    "café",  # its accent is in the list
    "retumn",  # two letters off ("rn" read as "m" and a letter lost): not a one-swap misreading
])
def test_words_and_codes_are_left_as_read(english, word):
    assert english.word(word) == word


@pytest.mark.parametrize("read", ["thcse", "womon", "contral", "whiie"])
def test_a_word_two_swaps_away_from_words_about_as_common_is_not_guessed(english, read):
    # "thcse": "these" or "those"; "womon": "women" or "woman"; "contral": "control" or "central"
    assert english.word(read) == read


def test_a_crude_word_is_never_a_guess(english):
    # "(CECK" on a FUNSD form: o read as e would make it a word no one should hear guessed
    assert english.word("(CECK") == "(CECK" and english.word("nnde") == "nnde"
    assert english.word("CECKS") == "CECKS"  # nor its plural


def test_a_misreading_that_made_its_way_into_the_word_list_stays(english):
    # the web text behind the list holds OCR errors too ("tbe", "wlll"): in the list, so kept
    assert english.word("wlll") == "wlll" and english.word("tben") == "then"


def test_half_of_a_word_hyphenated_across_lines_is_left_alone(english):
    words, changed = english.text(["the", "corre-", "sponding", "value"])
    assert words == ["the", "corre-", "sponding", "value"] and changed == 0
    assert english.text(["sponding"], previous="corre-") == (["sponding"], 0)
    assert english.word("sponding") == "spending"  # what it would have become standing alone


def box(text):
    return Box(text, 0.9, [[0, 0], [10, 0], [10, 10], [0, 10]])


def test_boxes_are_corrected_in_reading_order_with_the_line_before_in_view(english):
    first = [[box("Please return the"), box("Tttle")], [box("page immedlately, with the corre-")],
             [box("sponding form, to our office before the end of the month")]]
    second = [[box("sponding TOTAI")]]  # a new block: nothing hyphenated before it
    assert correct_boxes([first, second], english) == 4
    assert [[b.text for b in line] for line in first] == [
        ["Please return the", "Title"], ["page immediately, with the corre-"],
        ["sponding form, to our office before the end of the month"]]
    assert second[0][0].text == "spending TOTAL"


# the English list would turn words of these into English ones: "fiable" (reliable) into
# "liable", "décision" into "decision", "tomado" (taken) into "tornado", "länger" into "longer"
OTHER_LANGUAGES = [
    "La décision est prise: le fichier a changé, la vérification est fiable. Ne pas laisser au soleil.",
    "El candidato ha tomado la decisión de votar por la reunión del plazo de junio.",
    "Die Sitzung dauert länger als geplant, meist bis spät am Abend. Bitte Preise prüfen.",
]


@pytest.mark.parametrize("text", OTHER_LANGUAGES)
def test_a_page_in_another_language_is_left_as_read(english, text):
    words = text.split(" ")
    assert english.text(words)[1] > 0  # word by word, some would be changed
    assert english.language_share(words) < 0.5
    page = [[box(text)]]
    assert correct_boxes([page], english) == 0 and page[0][0].text == text


def test_a_page_in_two_languages_is_left_as_read(english):
    # a bilingual label, English and French halves (Canada's are): not English enough to guess in
    lines = [[box("Keep refrigerated after opening. Conserver au frais après ouverture.")],
             [box("Best before: see lid. Meilleur avant: voir le couvercle. Produit fiable.")]]
    assert english.word("fiable.") == "liable."
    assert correct_boxes([lines], english) == 0
    assert lines[1][0].text.endswith("Produit fiable.")


@pytest.mark.parametrize("word", ["čeká", "hatası", "klíčů"])
def test_a_word_with_letters_beyond_the_lists_alphabet_is_left_whole(english, word):
    # "čeká" is no "č" before the word "eká" (which would have become "aka")
    assert english.word(word) == word


def test_a_lone_misread_word_is_left_as_read(english):
    # nothing around it says which language it is in
    page = [[box("TOTAI")]]
    assert english.word("TOTAI") == "TOTAL" and correct_boxes([page], english) == 0
    assert english.language_share(["TOTAI", "12.50"]) == 0.0 and english.language_share([]) == 0.0


def test_other_languages_use_their_own_list_and_keep_their_accents():
    german = WordCorrector("de")
    assert german.language == "de"
    assert german.word("Scbule") == "Schule" and german.word("Nacbt") == "Nacht"  # h read as b
    assert german.word("Wasser") == "Wasser"
    assert german.word("noté") == "noté"  # accents are a language's own outside English


@pytest.mark.parametrize("language", ["xx", "EN", "../en", "en/../../x", ""])
def test_a_language_without_a_word_list_is_refused(language):
    assert word_list_file(language) is None
    with pytest.raises(WordListError, match="no word list"):
        WordCorrector(language)


def test_config_checks_the_language(tmp_path):
    path = tmp_path / "edge-agent.toml"
    path.write_text('[ocr]\ncorrect_words = "klingon"\n')
    with pytest.raises(ConfigError, match="ocr.correct_words: no word list for 'klingon'"):
        load_config(path)
    path.write_text('[ocr]\ncorrect_words = ""\n')
    assert load_config(path).ocr.correct_words == ""
    path.write_text('[ocr]\ncorrect_words = "fr"\n')
    assert load_config(path).ocr.correct_words == "fr"


def test_a_worker_without_a_language_reads_words_as_they_are():
    from edge_agent.engines.rapidocr import OcrWorker, models

    from .ocr_pages import encoded, render

    page = encoded(render([((30, 30), "Please sign the Tttle page")], size=(700, 100)))
    worker = OcrWorker(None, recheck_below=1.0, correct_words="")  # type: ignore[arg-type]
    result = worker.recognise(page, 1_000_000)
    assert "Tttle" in result["text"] and "words_corrected" not in result["page"]
    assert models(worker)["correct_words"] is None
    with pytest.raises(WordListError):
        OcrWorker(None, recheck_below=1.0, correct_words="xx")  # type: ignore[arg-type]
