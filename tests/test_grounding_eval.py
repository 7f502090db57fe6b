"""The tutor's answers on the grounding evaluation set (tests/eval/grounding/, see
tests/support/grounding.py) in the default set-up — local e5 embeddings, the offline tutor — with
floors a little under the figures measured when they were set (load_tests/reports/eval.md has
the full run over a socket), so answer quality cannot silently regress."""

from __future__ import annotations

from chat_server.settings import Settings
from tests.support.grounding import ask_in_process, score, table

# Measured 2026-12-04 in this set-up (in process and over the socket alike): right page in any /
# the first citation 100% / 100% for the 118 same-language questions, 67% / 50% for the 12
# cross-language ones; right document 97%; key fact 91%; 9 of the 12 out-of-scope questions
# answered "not covered"; no repeated sentence. A floor is one question or so under each.
FLOORS = {
    "same_language_page_any": 0.96,
    "same_language_page_first": 0.94,
    "right_document": 0.93,
    "key_fact": 0.85,
    "cross_language_page_any": 0.55,
    "not_covered_recall": 0.65,
}


async def test_answers_cite_the_right_page_and_say_when_not_covered(settings: Settings) -> None:
    outcomes, _ = await ask_in_process(settings)
    scores = score(outcomes)
    print("\n" + "\n".join(table(scores)))
    same = scores.tally(["direct", "paraphrase", "distractor", "after_break"])
    cross = scores.tally(["cross"])
    in_scope = scores.in_scope
    precision, recall = scores.not_covered_precision_recall()
    measured = {
        "same_language_page_any": same.page_any / same.asked,
        "same_language_page_first": same.page_first / same.asked,
        "right_document": in_scope.document / in_scope.asked,
        "key_fact": in_scope.fact / in_scope.asked,
        "cross_language_page_any": cross.page_any / cross.asked,
        "not_covered_recall": recall,
    }
    below = {k: round(v, 3) for k, v in measured.items() if v < FLOORS[k]}
    assert not below, f"below the floors {FLOORS}: {below}"
    assert sum(t.repeats for t in scores.by_kind.values()) == 0
    assert same.asked >= 100 and cross.asked >= 10 and scores.by_kind["out_of_scope"].asked >= 10
    # Every citation names a page of the PDF it quotes and a span that is in its passage.
    for o in outcomes:
        for c in o.citations:
            assert isinstance(c["page"], int) and c["text"] in c["passage"].replace("\n", " ") \
                or " … " in c["text"], c
