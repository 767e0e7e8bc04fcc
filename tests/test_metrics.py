import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager.errors import EagerError
from eager.eval.grading import AnswerEquivalence
from eager.eval.metrics import (
    PromptScore,
    cons_at_k,
    vote_groups,
    ks_up_to,
    majority_vote,
    normalize_vote,
    pass_at_any,
    pass_rate,
    score_prompt,
    summarize,
    unbiased_pass_at_k,
)


def test_pass_at_any_is_one_if_any_sequence_is_correct():
    assert pass_at_any([False, True, False]) == 1.0
    assert pass_at_any([False, False]) == 0.0
    assert pass_at_any([]) == 0.0


def test_pass_rate_is_the_fraction_correct_and_zero_for_no_sequences():
    assert pass_rate([True, False, False, True]) == 0.5
    assert pass_rate([]) == 0.0


def test_unbiased_pass_at_k_matches_the_binomial_closed_form_for_n_up_to_16():
    for n in range(1, 17):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                closed_form = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert unbiased_pass_at_k(n, c, k) == pytest.approx(closed_form, abs=1e-12), (n, c, k)


def test_unbiased_pass_at_k_hand_values():
    assert unbiased_pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert unbiased_pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert unbiased_pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)  # 1 - C(7,5)/C(10,5)


def test_unbiased_pass_at_k_with_k_equal_n_is_one_iff_any_correct():
    assert unbiased_pass_at_k(8, 1, 8) == 1.0
    assert unbiased_pass_at_k(8, 0, 8) == 0.0


def test_unbiased_pass_at_k_is_zero_with_no_correct_and_one_with_all_correct():
    assert unbiased_pass_at_k(16, 0, 3) == 0.0
    assert unbiased_pass_at_k(16, 16, 3) == 1.0


def test_unbiased_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows float; the product form does not.
    assert unbiased_pass_at_k(1000, 1, 500) == pytest.approx(0.5)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1)])
def test_unbiased_pass_at_k_rejects_k_above_n_and_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        unbiased_pass_at_k(n, c, k)


def test_normalize_vote_strips_dollars_and_all_whitespace_and_lower_cases_as_the_reference():
    assert normalize_vote(" $\\frac {1}{2}$ ") == "\\frac{1}{2}"
    assert normalize_vote("\\text{ (A) }") == "\\text{(a)}"
    assert normalize_vote("$ $") is None
    assert normalize_vote(None) is None


def test_majority_vote_returns_the_most_common_answer_as_first_written():
    assert majority_vote(["3", " $4$", "4 ", "3", "4"]) == " $4$"


def test_majority_vote_tie_goes_to_the_answer_seen_first():
    assert majority_vote(["7", "5", "5", "7"]) == "7"
    assert majority_vote(["5", "7", "7", "5"]) == "5"


def test_majority_vote_ignores_none_answers():
    assert majority_vote([None, None, "2", None]) == "2"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_the_exact_vote_does_not_merge_mathematically_equal_spellings():
    assert majority_vote(["0.5", "\\frac{1}{2}", "\\frac{1}{2}"]) == "\\frac{1}{2}"


# -- Cons@k by equivalence ----------------------------------------------------------------


def same_parity(first: str, second: str) -> bool:
    """A toy equivalence: integers are equal when their parity is."""
    return int(first) % 2 == int(second) % 2


def test_answers_math_verify_finds_equal_are_one_vote():
    answers = ["0.5", "3", "\\frac{1}{2}", "3", "\\dfrac{1}{2}"]
    assert majority_vote(answers) == "3"  # exact: "3" has 2 votes, the halves 1 each
    assert majority_vote(answers, AnswerEquivalence()) == "0.5"  # the halves are one vote of 3
    correct = [True, False, True, False, True]
    assert cons_at_k(answers, correct) == 0.0
    assert cons_at_k(answers, correct, AnswerEquivalence()) == 1.0


def test_an_answer_joins_the_first_earlier_group_whose_representative_it_equals():
    assert vote_groups(["1", "2", "3", "4", "2"], same_parity) == [[0, 2], [1, 3, 4]]
    assert vote_groups(["1", "2", "3", "4", "2"]) == [[0], [1, 4], [2], [3]]


def test_an_equivalence_tie_goes_to_the_group_whose_first_answer_comes_first():
    # odd {1, 3} and even {2, 4}: two votes each; the odd group's first answer comes first
    assert majority_vote(["1", "2", "4", "3"], same_parity) == "1"
    assert majority_vote(["2", "1", "3", "4"], same_parity) == "2"


def test_identical_answers_are_grouped_before_any_equivalence_call():
    calls = []

    def counting(first, second):
        calls.append((first, second))
        return first == second

    answers = ["18"] * 20 + [" $18$ "] * 6 + ["17"] * 6
    assert majority_vote(answers, counting) == "18"
    assert calls == [("18", "17")]  # two distinct keys: one comparison, not 32 * 31 / 2


def test_equivalence_calls_are_at_most_distinct_answers_times_groups():
    calls = []

    def counting(first, second):
        calls.append(1)
        return False

    answers = [str(i % 8) for i in range(32)]
    vote_groups(answers, counting)
    assert len(calls) == 8 * 7 // 2


def test_an_equivalence_that_raises_counts_as_different_and_never_stops_the_vote():
    def broken(first, second):
        raise RuntimeError("sympy exploded")

    assert majority_vote(["1", "2", "2"], broken) == "2"
    assert cons_at_k(["1", "2", "2"], [False, True, True], broken) == 1.0


vote_answers = st.lists(st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["0.5", "\\frac{1}{2}", "1/2", "2", "x", "\\frac{", "}{", "$"])), max_size=12)


@settings(max_examples=40, deadline=None)
@given(answers=vote_answers, data=st.data())
def test_the_vote_never_raises_and_its_winner_leads_the_largest_group(answers, data):
    correct = data.draw(st.lists(st.booleans(), min_size=len(answers), max_size=len(answers)))
    for equivalent in (None, AnswerEquivalence()):
        groups = vote_groups(answers, equivalent)
        assert sorted(i for group in groups for i in group) == [i for i, a in enumerate(answers) if normalize_vote(a)]
        winner = majority_vote(answers, equivalent)
        assert (winner is None) == (not groups)
        if groups:
            assert winner == answers[min(groups, key=lambda g: (-len(g), min(g)))[0]]
        assert cons_at_k(answers, correct, equivalent) in (0.0, 1.0)


def test_cons_at_k_uses_the_correctness_of_the_majority_answers_first_occurrence():
    assert cons_at_k(["1", "2", "2"], [True, False, False]) == 0.0
    assert cons_at_k(["1", "2", "2"], [False, True, True]) == 1.0
    assert cons_at_k(["2", "1", "1", "2"], [True, False, False, True]) == 1.0  # tie: "2" first


def test_cons_at_k_is_zero_without_any_answer():
    assert cons_at_k([None, None], [False, False]) == 0.0


def test_cons_at_k_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        cons_at_k(["1"], [True, False])


def test_ks_up_to_lists_powers_of_two_not_above_n():
    assert ks_up_to(1) == [1]
    assert ks_up_to(12) == [1, 2, 4, 8]
    assert ks_up_to(16) == [1, 2, 4, 8, 16]
    assert ks_up_to(0) == []


def sequence(n_tokens, answer, correct):
    return {"text": f"... \\boxed{{{answer}}}", "n_tokens": n_tokens, "parent": None, "fork_at": None,
            "answer": answer, "correct": correct}


# Prompt "a": 4 sequences, 2 correct, majority "18" (2 votes, " $18$ " and "18" vote together).
RECORD_A = {
    "id": "a", "question": "q", "gold": "18", "generated_tokens": 100, "wall_s": 2.0,
    "forks": [{"at": 5}, {"at": 9}],
    "sequences": [sequence(60, "18", True), sequence(50, " $18$ ", True),
                  sequence(40, "17", False), sequence(30, None, False)],
}
# Prompt "b": 2 sequences, none correct, no "forks" key.
RECORD_B = {
    "id": "b", "question": "q", "gold": "5", "generated_tokens": 50, "wall_s": 3.0,
    "sequences": [sequence(25, "3", False), sequence(25, "4", False)],
}


def test_score_prompt_counts_sequences_tokens_forks_and_votes():
    assert score_prompt(RECORD_A) == PromptScore(
        id="a", n_sequences=4, n_correct=2, pass_at_any=1.0, pass_rate=0.5, cons=1.0, cons_exact=1.0,
        generated_tokens=100, sequence_tokens=180, forks=2, wall_s=2.0,
    )


def test_score_prompt_treats_absent_forks_as_zero():
    assert score_prompt(RECORD_B).forks == 0


def test_score_prompt_missing_required_field_is_an_error():
    with pytest.raises(EagerError, match="'x' has no 'wall_s' field"):
        score_prompt({"id": "x", "generated_tokens": 1, "sequences": []})


def test_summarize_two_hand_made_records():
    summary = summarize([RECORD_A, RECORD_B])
    # unbiased pass@k with k in ks_up_to(min(4, 2)) = [1, 2]:
    #   a: n=4, c=2: k=1 -> 1 - 2/4 = 0.5 ; k=2 -> 1 - C(2,2)/C(4,2) = 5/6
    #   b: n=2, c=0: 0 for every k
    intervals = summary.pop("intervals")
    assert summary == {
        "n_prompts": 2,
        "pass_at_k": pytest.approx((1.0 + 0.0) / 2),
        "unbiased_pass_at_k": {"1": pytest.approx(0.25), "2": pytest.approx(5 / 12)},
        "pass_rate": pytest.approx((0.5 + 0.0) / 2),
        "cons_at_k": pytest.approx((1.0 + 0.0) / 2),
        "cons_at_k_exact": pytest.approx((1.0 + 0.0) / 2),
        "k": {"min": 2, "max": 4, "mean": 3.0},
        "generated_tokens": 150,
        "sequence_tokens": 180 + 50,
        "sequences": 6,
        "forks": 2,
        "preemptions": 0,
        "length_share": 0.0,
        "engine_time_share_s": pytest.approx(5.0),
        "tokens_per_s": pytest.approx(150 / 5.0),
    }
    # two prompts, one solved: a resample holds 0, 1 or 2 solved ones
    assert intervals["pass_at_k"] == [0.0, 1.0]
    assert intervals["pass_rate"] == [0.0, 0.5]


def test_summarize_empty_list_gives_zeros():
    assert summarize([]) == {
        "n_prompts": 0, "pass_at_k": 0.0, "unbiased_pass_at_k": {}, "pass_rate": 0.0, "cons_at_k": 0.0,
        "cons_at_k_exact": 0.0, "generated_tokens": 0, "sequence_tokens": 0, "sequences": 0, "forks": 0,
        "engine_time_share_s": 0.0, "tokens_per_s": 0.0, "preemptions": 0, "length_share": 0.0,
        "k": {"min": 0, "max": 0, "mean": 0.0},
        "intervals": {"pass_at_k": None, "pass_rate": None, "cons_at_k": None, "cons_at_k_exact": None},
    }


def test_summarize_zero_wall_time_gives_zero_tokens_per_second():
    record = dict(RECORD_B, wall_s=0.0)
    assert summarize([record])["tokens_per_s"] == 0.0


def test_summarize_prompt_without_sequences_has_no_unbiased_pass_at_k():
    record = dict(RECORD_B, sequences=[])
    summary = summarize([RECORD_A, record])
    assert summary["unbiased_pass_at_k"] == {}
    assert summary["pass_rate"] == pytest.approx(0.25)


def test_summarize_reports_cons_at_k_by_equivalence_and_the_exact_vote():
    record = {
        "id": "h", "generated_tokens": 10, "wall_s": 1.0,
        "sequences": [sequence(5, "3", False), sequence(5, "0.5", True), sequence(5, "3", False),
                      sequence(5, "\\frac{1}{2}", True), sequence(5, "1/2", True)],
    }
    summary = summarize([record])
    assert (summary["cons_at_k"], summary["cons_at_k_exact"]) == (1.0, 0.0)
    assert summarize([record], lambda first, second: False)["cons_at_k"] == 0.0  # the equivalence given is used
