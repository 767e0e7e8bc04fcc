import pytest

from eager.eval.budget import adapt_plan, full_plan, retry_theta, saved_budget, split_budget


def test_split_budget_smaller_than_hard_set_gives_one_each_to_the_first_ones():
    assert split_budget(2, [4, 1, 7, 3], cap=10) == {4: 1, 1: 1}


def test_split_budget_even_share_with_remainder_to_the_first_ones():
    # 11 = 3 * 3 + 2: the first two hard prompts get 4, the last 3.
    assert split_budget(11, [0, 2, 5], cap=100) == {0: 4, 2: 4, 5: 3}


def test_split_budget_exact_division_gives_equal_shares():
    assert split_budget(12, [1, 2, 3], cap=100) == {1: 4, 2: 4, 3: 4}


def test_split_budget_cap_binds_every_share():
    assert split_budget(100, [0, 1], cap=8) == {0: 8, 1: 8}


def test_split_budget_cap_binds_only_the_remainder_share():
    # 7 over 2 -> 4, 3; cap 3 -> 3, 3 (the surplus is not redistributed).
    assert split_budget(7, [0, 1], cap=3) == {0: 3, 1: 3}


def test_split_budget_nothing_saved_gives_empty_plan():
    assert split_budget(0, [0, 1], cap=8) == {}
    assert split_budget(-5, [0, 1], cap=8) == {}


def test_split_budget_no_hard_prompts_gives_empty_plan():
    assert split_budget(10, [], cap=8) == {}


def test_split_budget_zero_cap_gives_empty_plan():
    assert split_budget(10, [0, 1], cap=0) == {}


def test_split_budget_negative_cap_is_an_error():
    with pytest.raises(ValueError, match="cap must be >= 0"):
        split_budget(10, [0], cap=-1)


def test_split_budget_duplicate_hard_indices_are_an_error():
    with pytest.raises(ValueError, match="distinct"):
        split_budget(10, [0, 0], cap=5)


def test_saved_budget_is_m_times_prompts_minus_used():
    assert saved_budget([4, 1, 2], 4) == 12 - 7


def test_adapt_plan_gives_saved_budget_to_prompts_at_the_cap():
    # M=4, budget 16, used 4+1+4+2 = 11, R = 5 over hard {0, 2}: 3 and 2 (cap 12).
    assert adapt_plan([4, 1, 4, 2], M=4) == {0: 3, 2: 2}


def test_adapt_plan_caps_extra_at_three_times_m():
    # M=2, 10 prompts, only prompt 0 at the cap, R = 20 - (2 + 9) = 9 -> capped at 6.
    assert adapt_plan([2] + [1] * 9, M=2) == {0: 6}


def test_adapt_plan_extra_factor_sets_the_cap():
    assert adapt_plan([2] + [1] * 9, M=2, extra_factor=1) == {0: 2}


def test_adapt_plan_without_prompts_at_the_cap_is_empty():
    assert adapt_plan([1, 2, 3], M=4) == {}


def test_adapt_plan_all_prompts_at_the_cap_saves_nothing():
    assert adapt_plan([4, 4, 4], M=4) == {}


def test_full_plan_gives_budget_to_unsolved_prompts_at_the_cap_first():
    # M=4: used 4+1+4+1+2 = 12 of 20, R = 8. Unsolved: 1, 2, 4; at cap: 2.
    # Order 2, 1, 4; 8 = 3*2 + 2 -> 3, 3, 2; cap M = 4.
    n = [4, 1, 4, 1, 2]
    solved = [True, False, False, True, False]
    assert full_plan(n, solved, M=4) == {2: 3, 1: 3, 4: 2}


def test_full_plan_small_budget_goes_to_at_cap_prompts_first():
    # M=4: used 4+4+3 = 11 of 12, R = 1; unsolved 0 and 1, both at cap; 2 is solved.
    assert full_plan([4, 4, 3], [False, False, True], M=4) == {0: 1}
    # Unsolved 0 (below cap) and 2 (at cap): the at-cap one comes first despite its index.
    assert full_plan([3, 4, 4], [False, True, False], M=4) == {2: 1}


def test_full_plan_caps_extra_at_m():
    # M=4: used 1+1+1+4 = 7 of 16, R = 9, only prompt 3 unsolved -> capped at 4.
    assert full_plan([1, 1, 1, 4], [True, True, True, False], M=4) == {3: 4}


def test_full_plan_all_solved_is_empty():
    assert full_plan([1, 2], [True, True], M=4) == {}


def test_full_plan_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="solved has 1 entries for 2 prompts"):
        full_plan([1, 2], [True], M=4)


def test_plans_reject_m_below_one():
    with pytest.raises(ValueError, match="M must be >= 1"):
        adapt_plan([1], M=0)


def test_retry_theta_below_cap_lowers_theta_on_the_first_try_already():
    assert retry_theta(2.5, 0, at_cap=False) == pytest.approx(2.0)


def test_retry_theta_below_cap_follows_the_reference_schedule():
    # try 1, 2, 3, 4: x0.8 each try, and x0.9 more each try from the third on
    values = [retry_theta(1.0, attempt, at_cap=False) for attempt in range(4)]
    assert values == pytest.approx([0.8, 0.64, 0.4608, 0.331776])


def test_retry_theta_at_cap_keeps_theta_twice_then_uses_point_nine_theta():
    assert [retry_theta(2.4, attempt, at_cap=True) for attempt in range(5)] == pytest.approx([2.4, 2.4, 2.16, 2.16, 2.16])


def test_retry_theta_custom_decays():
    assert retry_theta(1.0, 2, at_cap=False, decay=0.5, late_decay=0.5) == pytest.approx(0.5**3 * 0.5)
    assert retry_theta(1.0, 3, at_cap=True, late_decay=0.5) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("theta", "attempt", "kwargs"),
    [(2.0, -1, {}), (-0.1, 0, {}), (2.0, 1, {"decay": 0.0}), (2.0, 1, {"late_decay": 1.5})],
)
def test_retry_theta_rejects_invalid_arguments(theta, attempt, kwargs):
    with pytest.raises(ValueError):
        retry_theta(theta, attempt, at_cap=False, **kwargs)
