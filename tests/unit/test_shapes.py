"""Request shapes: every bad field named at once, in words derived from the declared types."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import pytest

from central.web.errors import ApiError
from central.web.shapes import (
    PLATFORM,
    Dialect,
    Kwh,
    OptionalText,
    codes,
    decode,
    field_problems,
    json_type,
    schemas,
    whole,
)


class Problems(Exception):
    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__(problems)
        self.problems = problems


RAISING = Dialect("required", False, Problems)


class Order(msgspec.Struct):
    mode: Literal["fast", "slow"]
    kwh: Kwh
    count: Annotated[int, msgspec.Meta(ge=1, le=9)] = 1
    note: OptionalText = None
    code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$", extra={"hint": "two capitals"})] | None = None
    urgent: bool = False


def problems_of(data: Mapping[str, Any]) -> dict[str, str]:
    return field_problems(data, Order)[0]


def test_a_good_body_becomes_the_struct():
    order = decode({"mode": "fast", "kwh": 10, "note": "", "extra": 1}, Order, RAISING)
    assert order == Order("fast", 10.0, 1, None, None, False)


def test_every_bad_field_is_named_with_todays_words():
    assert problems_of({"mode": 1, "kwh": True, "count": 0, "code": "abc", "urgent": "yes"}) == {
        "mode": "must be a string, got number",
        "kwh": "must be a number, got boolean",
        "count": "must be an integer from 1 to 9, got 0",
        "code": "two capitals",
        "urgent": "must be true or false, got string",
    }
    assert problems_of({"mode": "turbo", "kwh": 0}) == {
        "mode": "must be one of fast | slow, got 'turbo'",
        "kwh": "must be a number >= 0.01 and <= 1000, got 0",
    }


def test_missing_or_null_required_fields_are_required():
    assert problems_of({"kwh": None}) == {"mode": "required", "kwh": "required"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e9])
def test_non_finite_or_huge_amounts_are_refused(value):
    assert set(problems_of({"mode": "fast", "kwh": value})) == {"kwh"}


def test_rules_see_only_good_fields_and_lose_to_a_fields_own_problem():
    seen: list[Mapping[str, Any]] = []

    def rules(valid: Mapping[str, Any]) -> Mapping[str, str]:
        seen.append(dict(valid))
        return {"kwh": "rule", "mode": "rule"}

    with pytest.raises(Problems) as caught:
        decode({"mode": "fast", "kwh": -1}, Order, RAISING, rules)
    assert caught.value.problems == {"kwh": "must be a number >= 0.01 and <= 1000, got -1", "mode": "rule"}
    assert seen == [{"mode": "fast"}]


def test_json_type_names_json_types():
    values: tuple[object, ...] = ({}, [], "", 1.5, True, None)
    assert [json_type(v) for v in values] == [
        "object",
        "array",
        "string",
        "number",
        "boolean",
        "null",
    ]


def test_schemas_put_structs_in_the_components_with_their_constraints():
    generated, components = schemas([Order, list[Order]])
    assert generated == [
        {"$ref": "#/components/schemas/Order"},
        {"type": "array", "items": {"$ref": "#/components/schemas/Order"}},
    ]
    kwh = components["Order"]["properties"]["kwh"]
    assert (kwh["minimum"], kwh["maximum"]) == (0.01, 1000.0)
    assert components["Order"]["required"] == ["mode", "kwh"]


class Payment(msgspec.Struct, rename="camel"):
    payment_method: Annotated[int, codes({1: "微信", 2: "支付宝"})]
    transaction_id: Annotated[str, msgspec.Meta(max_length=4)] | None = None


def test_the_platform_dialect_names_camel_case_fields_in_problem_details():
    with pytest.raises(ApiError) as caught:
        decode({"paymentMethod": 3, "transactionId": "12345"}, Payment, PLATFORM)
    assert caught.value.details == {
        "paymentMethod": ["must be one of 1=微信, 2=支付宝; got 3"],
        "transactionId": ["must be at most 4 characters (got 5)"],
    }
    assert decode({"paymentMethod": 1, "transactionId": "  "}, Payment, PLATFORM) == Payment(1, None)
    with pytest.raises(ApiError) as caught:
        decode({"transactionId": "\ud800"}, Payment, PLATFORM)
    assert caught.value.details == {
        "paymentMethod": ["is required"],
        "transactionId": ["must be valid Unicode text"],
    }


def test_the_platform_dialect_reads_blank_as_absent_only_in_text_fields():
    with pytest.raises(ApiError) as caught:
        decode({"paymentMethod": "  ", "transactionId": " "}, Payment, PLATFORM)
    assert caught.value.details == {"paymentMethod": ["must be an integer, got string"]}


def test_a_lone_surrogate_in_a_non_text_field_is_a_problem_not_a_crash():
    with pytest.raises(ApiError) as caught:
        decode({"paymentMethod": "\ud800"}, Payment, PLATFORM)
    assert caught.value.details == {"paymentMethod": ["must be an integer, got string"]}


def test_codes_are_an_enum_in_the_schema():
    _generated, components = schemas([Payment])
    method = components["Payment"]["properties"]["paymentMethod"]
    assert (method["enum"], method["description"]) == ([1, 2], "1=微信, 2=支付宝")


Digit = Annotated[int, msgspec.Meta(ge=1, le=9)]


class Tagged(msgspec.Struct):
    code: Annotated[str, whole(re.compile(r"[a-z]{3}"), "three small letters")] | None = None
    ids: Annotated[list[Digit], msgspec.Meta(min_length=1, max_length=3)] | None = None


def test_a_whole_pattern_matches_the_whole_text_and_is_documented_anchored():
    assert field_problems({"code": "abc\n"}, Tagged)[0] == {"code": "three small letters"}
    assert field_problems({"code": "xabc"}, Tagged)[0] == {"code": "three small letters"}
    assert field_problems({"code": "abc"}, Tagged) == ({}, {"code": "abc"})
    code = schemas([Tagged])[1]["Tagged"]["properties"]["code"]["anyOf"][0]
    assert code["pattern"] == "^(?:[a-z]{3})$"


@pytest.mark.parametrize(
    ("ids", "problem"),
    [
        ({}, "must be an array of integers, got object"),
        ([], "must not be empty"),
        ([1, 2, 3, 4], "must have at most 3 items (got 4)"),
        ([1, 0], "every item must be an integer from 1 to 9"),
        ([1, True], "every item must be an integer from 1 to 9"),
    ],
)
def test_an_array_problem_says_what_the_array_must_be(ids, problem):
    assert field_problems({"ids": ids}, Tagged)[0] == {"ids": problem}
