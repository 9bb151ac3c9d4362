"""Identifiers in the shapes real registers use.

A person's ordinal (0, 1, 2 ... in order of registration) determines their
住民票コード, 宛名番号 and the numbers of their seals, so that the same seed
always yields the same identifiers and no two people ever share one.
"""

from __future__ import annotations

import operator
import random
import string

RESIDENT_CODE_BASE = 1_000_000_001  # ten digits before the check digit
_CARD_LETTERS = string.ascii_uppercase


# Qn for n = 1, 2, … counted from the rightmost digit: n+1 (n ≤ 6), n−5 (n ≥ 7).
_WEIGHTS_FROM_RIGHT = (2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6)


def _mod11_check_digit(digits: str) -> int:
    """Check digit of 住民票コード and 個人番号: 11 − (Σ Pn·Qn mod 11), where Pn
    is the n-th digit from the right; a remainder of 0 or 1 gives 0."""
    remainder = sum(map(operator.mul, _WEIGHTS_FROM_RIGHT, map(int, reversed(digits)))) % 11
    return 0 if remainder <= 1 else 11 - remainder


def resident_code(ordinal: int) -> str:
    body = str(RESIDENT_CODE_BASE + ordinal)
    return body + str(_mod11_check_digit(body))


def ordinal_of_resident_code(code: str) -> int | None:
    """The ordinal behind a 住民票コード, or None if the code is not one of ours."""
    if len(code) != 11 or not code.isdigit() or str(_mod11_check_digit(code[:10])) != code[10]:
        return None
    ordinal = int(code[:10]) - RESIDENT_CODE_BASE
    return ordinal if ordinal >= 0 else None


def atena_number(ordinal: int) -> str:
    return f"A{ordinal + 1:09d}"


def household_id(first_member_ordinal: int) -> str:
    return f"{first_member_ordinal + 1:010d}"


def seal_number(seal_ordinal: int) -> str:
    return f"S{seal_ordinal + 1:09d}"


def seal_card_number(seal_ordinal: int) -> str:
    return f"C{seal_ordinal + 1:09d}"


def individual_number(rng: random.Random) -> str:
    body = f"{rng.randrange(10**11):011d}"
    return body + str(_mod11_check_digit(body))


def residence_card_number(rng: random.Random) -> str:
    """在留カード番号: two letters, eight digits, two letters."""
    letters = rng.choices(_CARD_LETTERS, k=4)
    return f"{letters[0]}{letters[1]}{rng.randrange(10**8):08d}{letters[2]}{letters[3]}"


def seal_ordinal(number: str) -> int:
    return int(number[1:]) - 1
