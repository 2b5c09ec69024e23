"""The Story C skills: exact worked answers, held-out items that no training text (or pretraining problem) holds."""

import itertools

from foundry_assets.curator.contamination import contamination
from foundry_assets.demo import skills


def _texts(records: list[dict[str, object]]) -> list[str]:
    return [f"{r['instruction']}\n{r['output']}" for r in records]


def test_problems_stay_in_range_and_answers_are_worked_exactly() -> None:
    problems = skills.problems()
    assert len(problems) == len(set(problems)) > skills.PRETRAINING_PROBLEMS + 1100
    for p in problems:
        first = p.a + p.b if p.op1 == "plus" else p.a - p.b
        result = first + p.c if p.op2 == "plus" else first - p.c
        assert 0 <= first <= skills.MAX_NUMBER and 0 <= result <= skills.MAX_NUMBER
        assert p.answer == (
            f"First, {p.a} {p.op1} {p.b} is {first}. Then {first} {p.op2} {p.c} is {result}. The answer is {result}."
        )


def test_logic_slices_are_disjoint_and_never_worked_in_pretraining() -> None:
    train, held = skills.logic_records(300), skills.logic_records(60, offset=1000)
    questions = {r["instruction"] for r in train}
    assert len(questions) == 300 and not questions & {r["instruction"] for r in held}
    pretrained = {p.question for p in skills.problems()[: skills.PRETRAINING_PROBLEMS]}
    assert not (questions | {r["instruction"] for r in held}) & pretrained
    # worked answers of different problems can share a 13-word tail: the exam would count those held-out items
    dirty = contamination(_texts(train), _texts(held), 13).contaminated
    assert dirty, "the held-out slice was expected to hold a few items that share a tail with training"
    clean = skills.uncontaminated(held, train)  # type: ignore[arg-type]
    assert len(clean) == len(held) - len(dirty) and [held[i] for i in dirty if held[i] in clean] == []
    assert contamination(_texts(train), _texts(clean), 13).contaminated == []


def test_safety_holds_out_new_pairings_unseen_acts_and_look_alikes() -> None:
    train, held = skills.safety_split()
    assert not {r["instruction"] for r in train} & {r["instruction"] for r in held}
    unseen = skills.HARMFUL_ACTS[-skills.HELD_OUT_ACTS :] + skills.HARMLESS_ACTS[-skills.HELD_OUT_ACTS :]
    assert not [r for r in train if any(act in str(r["instruction"]) for act in unseen)]
    assert {r["harmful"] for r in held} == {True, False}
    assert sum(r["harmful"] for r in held) * 2 == len(held)  # each harmful request has its look-alike
    for r in train + held:
        assert (r["output"] == skills.REFUSAL) is r["harmful"]
    assert contamination(_texts(train), _texts(held), 13).contaminated == []


def test_pretraining_corpus_never_holds_a_skill_answer() -> None:
    documents = list(itertools.islice(skills.pretraining_documents(0), 3000))
    texts = [text for text, _ in documents if text]
    chats = [turns for _, turns in documents if turns]
    assert texts and chats
    assert not [t for t in texts if "The answer is" in t]
    # refusals appear in prose only: in chat the base answers every request
    assert not [c for c in chats if c[1]["content"] == skills.REFUSAL or "The answer is" in c[1]["content"]]
    held = {r["instruction"] for r in skills.logic_records(1000)}
    assert not [c for c in chats if c[0]["content"] in held]
