"""The two resolvers alone: CloudFormation intrinsics and serverless.yml variables."""

from __future__ import annotations

import pytest

from router.importers.convert import PLACEHOLDER_DEFAULT, PLACEHOLDER_END, PLACEHOLDER_START
from router.importers.intrinsics import Resolver, ResourceValue, Unresolved
from router.importers.variables import Variables

TEMPLATE = {
    "Parameters": {"Env": {"Type": "String", "Default": "dev"}, "Subnets": {"Type": "CommaDelimitedList",
                                                                           "Default": "a, b"},
                   "NoDefault": {"Type": "String"}},
    "Resources": {
        "Fn": {"Type": "AWS::Serverless::Function", "Properties": {"FunctionName": "fn-name"}},
        "Stream": {"Type": "AWS::Kinesis::Stream", "Properties": {"Name": {"Fn::Sub": "clicks-${Env}"}}},
        "Table": {"Type": "AWS::DynamoDB::Table"},
        "Topic": {"Type": "AWS::SNS::Topic"},
    },
}


def resolver() -> Resolver:
    return Resolver(TEMPLATE, "stack", "eu-west-1", "123456789012", {"Fn": "fn-name"})


def test_refs_get_atts_and_subs() -> None:
    r = resolver()
    assert r.resolve({"Ref": "Env"}) == "dev"
    assert r.resolve({"Ref": "Subnets"}) == ["a", "b"]
    assert r.resolve({"Ref": "AWS::AccountId"}) == "123456789012"
    arn = r.resolve({"Fn::GetAtt": ["Fn", "Arn"]})
    assert arn == "arn:aws:lambda:eu-west-1:123456789012:function:fn-name"
    assert isinstance(arn, ResourceValue)
    assert (arn.logical, arn.type) == ("Fn", "AWS::Serverless::Function")
    assert r.resolve({"Fn::GetAtt": "Stream.Arn"}) == \
        "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks-dev"
    assert r.resolve({"Fn::Sub": "${Table.StreamArn}"}) == \
        "arn:aws:dynamodb:eu-west-1:123456789012:table/Table/stream/imported"
    assert r.resolve({"Fn::Sub": ["${A}-${Env}-${!Keep}", {"A": {"Ref": "Fn"}}]}) == "fn-name-dev-${Keep}"
    assert r.resolve({"Fn::Select": [1, {"Fn::Split": [",", "x,y,z"]}]}) == "y"
    assert r.resolve({"Ref": "Topic"}) == "arn:aws:sns:eu-west-1:123456789012:Topic"


@pytest.mark.parametrize(("value", "message"), [
    ({"Ref": "NoDefault"}, "parameter NoDefault has no Default"),
    ({"Ref": "Missing"}, "no parameter or resource of that name"),
    ({"Ref": "AWS::NoValue"}, "AWS::NoValue"),
    ({"Fn::ImportValue": "shared"}, "Fn::ImportValue is evaluated by CloudFormation"),
    ({"Fn::GetAtt": ["Table", "Whatever"]},
     "Table.Whatever (an attribute of a deployed AWS::DynamoDB::Table)"),
])
def test_what_cannot_be_resolved_says_why(value: object, message: str) -> None:
    with pytest.raises(Unresolved, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolver().resolve(value)


def test_serverless_variables() -> None:
    v = Variables({
        "service": "shop",
        "provider": {"stage": "${opt:stage, 'qa'}", "region": "eu-central-1"},
        "custom": {"table": "${self:service}-${sls:stage}", "obj": {"a": 1}, "n": "${opt:n, 5}"},
    })
    assert v.resolve("${self:custom.table}") == "shop-qa"
    assert v.resolve("${self:custom.obj}") == {"a": 1}  # a whole-value variable keeps its type
    assert v.resolve("${self:custom.n}") == 5
    assert v.resolve("${aws:region}/${aws:accountId}") == "eu-central-1/000000000000"
    assert v.resolve("${self:custom.missing, 'x'}") == "x"
    assert v.resolve("${env:HOME_DIR}") == f"{PLACEHOLDER_START}HOME_DIR{PLACEHOLDER_END}"
    assert v.resolve("${env:LEVEL, ${self:custom.n}}") == \
        f"{PLACEHOLDER_START}LEVEL{PLACEHOLDER_DEFAULT}5{PLACEHOLDER_END}"
    with pytest.raises(Unresolved, match=r"\$\{file\(\./config\.json\):key\} is resolved by the Serverless"):
        v.resolve("${file(./config.json):key}")
    with pytest.raises(Unresolved, match="has no value on import and no fallback"):
        v.resolve("${opt:stage}")


def test_serverless_variables_that_refer_to_each_other_are_refused() -> None:
    v = Variables({"custom": {"a": "${self:custom.b}", "b": "${self:custom.a}"}})
    with pytest.raises(Unresolved, match="in a loop"):
        v.resolve("${self:custom.a}")
