"""CloudFormation intrinsic functions, resolved where the template alone says the value.

``Ref`` of a parameter gives its ``Default``; ``Ref`` / ``Fn::GetAtt`` of a resource give the name or ARN
it would have in the router's account and region (a :class:`ResourceValue`, so callers know it stands
for a template resource); ``Fn::Sub`` (both forms), ``Fn::Join``, ``Fn::Select``, ``Fn::Split`` and the
pseudo parameters are computed. Anything else raises :class:`Unresolved` saying what it was.
"""

from __future__ import annotations

import re
from typing import Any

from router.config.problems import Loc

_SUB = re.compile(r"\$\{([^}]*)\}")


class Unresolved(Exception):
    """Raised when a value depends on something only CloudFormation knows (a condition, an import, an
    attribute of a deployed resource); the message says what."""


class ResourceValue(str):
    """A name or ARN standing for a resource of the template (``logical``, of CloudFormation ``type``)."""

    logical: str
    type: str
    attribute: str

    def __new__(cls, value: str, logical: str, type_: str, attribute: str) -> ResourceValue:
        obj = super().__new__(cls, value)
        obj.logical, obj.type, obj.attribute = logical, type_, attribute
        return obj


FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")


class Resolver:
    """Resolves the intrinsics of one template. ``function_names`` maps a function's logical id to its
    name in the router config."""

    def __init__(self, data: dict[str, Any], stack: str, region: str, account: str,
                 function_names: dict[str, str]) -> None:
        self.parameters: dict[str, Any] = data.get("Parameters") or {}
        self.resources: dict[str, Any] = data.get("Resources") or {}
        self.function_names = function_names
        self.region, self.account = region, account
        self.pseudo = {
            "AWS::Region": region, "AWS::AccountId": account, "AWS::StackName": stack,
            "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{account}:stack/{stack}/imported",
        }

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic computed; raise :class:`Unresolved` for one that cannot be."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(str(arg))
            if key == "Fn::GetAtt":
                parts = arg.split(".", 1) if isinstance(arg, str) else self.resolve(arg)
                return self.get_att(str(parts[0]), str(parts[1]) if len(parts) > 1 else "")
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                sep, items = self.resolve(arg[0]), self.resolve(arg[1])
                return str(sep).join(str(i) for i in items)
            if key == "Fn::Select":
                index, items = self.resolve(arg[0]), self.resolve(arg[1])
                return items[int(index)]
            if key == "Fn::Split":
                sep, text = self.resolve(arg[0]), self.resolve(arg[1])
                return str(text).split(str(sep))
            if key.startswith("Fn::") or key == "Condition":
                raise Unresolved(f"{key} is evaluated by CloudFormation at deploy time")
        return {k: self.resolve(v) for k, v in value.items()}

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name == "AWS::NoValue":
            raise Unresolved("Ref AWS::NoValue (no value: SAM creates a resource of its own)")
        if name in self.parameters:
            param = self.parameters[name] or {}
            if "Default" not in param:
                raise Unresolved(f"parameter {name} has no Default; give it one or edit the value")
            default = self.resolve(param["Default"])
            if str(param.get("Type", "")).startswith("List<") or param.get("Type") == "CommaDelimitedList":
                return [s.strip() for s in str(default).split(",")]
            return default
        if name in self.resources:
            return self.get_att(name, "")
        if "." in name:  # SAM's generated resources (Fn.DestinationTopic, Fn.Alias)
            raise Unresolved(f"Ref {name} names a resource SAM generates on deploy")
        raise Unresolved(f"Ref {name}: no parameter or resource of that name in the template")

    def get_att(self, logical: str, attribute: str) -> ResourceValue:
        """What ``Ref`` (``attribute`` "") or ``Fn::GetAtt`` gives for a resource of the template."""
        resource = self.resources.get(logical)
        if not isinstance(resource, dict):
            raise Unresolved(f"{logical}.{attribute or 'Ref'}: no resource {logical} in the template")
        type_ = str(resource.get("Type", ""))
        props = resource.get("Properties") or {}
        r, a = self.region, self.account

        def named(prop: str) -> str:
            value = props.get(prop)
            try:
                resolved = self.resolve(value) if value is not None else None
            except Unresolved:
                resolved = None
            return str(resolved) if isinstance(resolved, str | int) else logical

        known = {"AWS::SQS::Queue": ("", "Arn", "QueueName", "QueueUrl"), "AWS::Kinesis::Stream": ("", "Arn"),
                 "AWS::DynamoDB::Table": ("", "Arn", "StreamArn"),
                 "AWS::Serverless::SimpleTable": ("", "Arn", "StreamArn")}
        if attribute not in known.get(type_, ("", "Arn")) and type_ not in ("AWS::SNS::Topic",):
            raise Unresolved(f"{logical}.{attribute} (an attribute of a deployed {type_ or 'resource'})")
        if type_ in FUNCTION_TYPES:
            name = self.function_names.get(logical, logical)
            value = f"arn:aws:lambda:{r}:{a}:function:{name}" if attribute == "Arn" else name
        elif type_ == "AWS::SQS::Queue":
            queue = named("QueueName")
            value = {"Arn": f"arn:aws:sqs:{r}:{a}:{queue}", "QueueName": queue}.get(
                attribute, f"https://sqs.{r}.amazonaws.com/{a}/{queue}")
        elif type_ == "AWS::Kinesis::Stream":
            stream = named("Name")
            value = f"arn:aws:kinesis:{r}:{a}:stream/{stream}" if attribute == "Arn" else stream
        elif type_ in ("AWS::DynamoDB::Table", "AWS::Serverless::SimpleTable"):
            table = named("TableName")
            value = {"Arn": f"arn:aws:dynamodb:{r}:{a}:table/{table}",
                     "StreamArn": f"arn:aws:dynamodb:{r}:{a}:table/{table}/stream/imported"}.get(
                attribute, table)
        elif type_ == "AWS::SNS::Topic" and attribute in ("", "TopicArn"):
            value = f"arn:aws:sns:{r}:{a}:{named('TopicName')}"
        elif attribute in ("", "Arn", "Name"):
            value = logical if attribute != "Arn" else f"arn:aws:{_service(type_)}:{r}:{a}:{logical}"
        else:
            raise Unresolved(f"{logical}.{attribute} (an attribute of a deployed {type_ or 'resource'})")
        return ResourceValue(value, logical, type_, attribute)

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, extra = str(arg[0]), self.resolve(arg[1]) if len(arg) > 1 else {}
        else:
            text, extra = str(arg), {}

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in extra:
                return str(extra[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                logical, attribute = name.split(".", 1)
                return str(self.get_att(logical, attribute))
            return str(self.ref(name))

        return _SUB.sub(one, text)


def _service(type_: str) -> str:
    parts = type_.split("::")
    return parts[1].lower() if len(parts) > 2 else "unknown"


def try_resolve(resolver: Resolver, value: Any, notes: Any, loc: Loc, what: str) -> Any:
    """``value`` resolved, or None with a note at ``loc`` saying why ``what`` was left out."""
    try:
        return resolver.resolve(value)
    except Unresolved as exc:
        notes.add(loc, f"{what}: not imported: {exc}")
        return None
    except (TypeError, IndexError, ValueError, AttributeError):
        notes.add(loc, f"{what}: not imported: a malformed intrinsic function")
        return None
