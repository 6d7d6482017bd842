"""Router config pieces from Lambda's terms: runtimes, schedule expressions, webhook paths, queue URLs,
event source settings and async destinations. Shared by the SAM and the serverless.yml importers.

Values the user must fill in (a broker URL, the URL of a queue the template creates) are written as the
router's ``${VAR:-default}`` interpolation, through :func:`placeholder`; every other ``$`` is escaped
when the YAML is written (``output.render``).
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from typing import Any

from router.config.checks import s3_bucket_of
from router.config.cron import CronError, cron_trigger
from router.config.node import node_version, version_tuple
from router.config.problems import Loc
from router.importers.intrinsics import ResourceValue
from router.importers.source import Notes

PLACEHOLDER_START, PLACEHOLDER_DEFAULT, PLACEHOLDER_END = "\ue000", "\ue001", "\ue002"
_PYTHON = re.compile(r"^python3\.(\d{1,2})$")
_NODE = re.compile(r"^nodejs(\d{1,3})\.x$")
NODE_MIN = 18
NODE_OLD_TO = "nodejs20.x"
_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$", re.IGNORECASE)
_CRON = re.compile(r"^cron\((.*)\)$", re.IGNORECASE)
_AT = re.compile(r"^at\(", re.IGNORECASE)
_SQS_ARN = re.compile(r"^arn:aws[a-z-]*:sqs:([a-z0-9-]+):(\d{12}):(.+)$")
_SNS_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$")
_EVENT_BUS_ARN = re.compile(r"^arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/[A-Za-z0-9/_.-]+$")
_VAR_CHARS = re.compile(r"[^A-Za-z0-9]+")
_WEEKDAY_NUMBER = re.compile(r"\d+")


def placeholder(variable: str, default: str | None = None) -> str:
    """Router interpolation ``${VARIABLE}`` / ``${VARIABLE:-default}``, kept apart from escaped text."""
    body = variable if default is None else f"{variable}{PLACEHOLDER_DEFAULT}{default}"
    return f"{PLACEHOLDER_START}{body}{PLACEHOLDER_END}"


def variable_name(*parts: str) -> str:
    """An environment variable name from words: ``("Orders queue", "url")`` -> ``ORDERS_QUEUE_URL``."""
    words = [_VAR_CHARS.sub("_", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", p)).strip("_") for p in parts]
    name = "_".join(w for w in words if w).upper()
    return name if name and not name[0].isdigit() else f"V_{name}"


def route_name(*parts: str) -> str:
    """A route name (1-64 of A-Z a-z 0-9 _ -) from the function and event names."""
    name = "-".join(_VAR_CHARS.sub("_", p).strip("_") for p in parts if p)
    return name[:64] or "route"


def runtime(value: Any, notes: Notes, loc: Loc) -> str | None:
    """The router runtime for Lambda's ``value``, one this machine can run: a Node.js older than the
    router runs, or a runtime whose node / python is not installed here, is written as the one that is
    (listed); a runtime the router has no bootstrap for is listed and the function left out."""
    text = str(value or "")
    node = _NODE.match(text)
    if node:
        return _node_runtime(text, int(node.group(1)), notes, loc)
    if _PYTHON.match(text):
        own = f"python{sys.version_info.major}.{sys.version_info.minor}"
        if text != own and not _runs(text):
            notes.add(loc, f"runtime {text}: no working {text} on this machine's PATH; written as {own} (the "
                           f"router's own); install {text} and set it back to run the function as on Lambda")
            return own
        return text
    if text == "provided":
        return text
    if text.startswith("provided."):
        notes.add(loc, f"runtime {text}: written as 'provided' (a bootstrap executable in the code dir)")
        return "provided"
    notes.add(loc, f"runtime {text or '(none)'}: not supported by the router (python3.X, nodejsNN.x, "
                   "provided); function left out")
    return None


def _runs(interpreter: str) -> bool:
    """Whether ``interpreter`` is on PATH and starts (a pyenv shim for a version not selected does not)."""
    import subprocess

    found = shutil.which(interpreter)
    if found is None:
        return False
    try:
        done = subprocess.run([found, "-c", "pass"], capture_output=True, timeout=30, check=False)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _node_runtime(text: str, major: int, notes: Notes, loc: Loc) -> str:
    executable = shutil.which("node")
    version = node_version(executable) if executable else None
    here = version_tuple(version)[0] if version else None
    if here == major and major >= NODE_MIN:
        return text
    if here is not None and here >= max(major, NODE_MIN):
        why = (f"the router runs Node.js {NODE_MIN} or later" if major < NODE_MIN
               else f"no node {major} on this machine's PATH")
        notes.add(loc, f"runtime {text}: {why}; written as nodejs{here}.x, the node on PATH ({version}); "
                       "check the code runs on it")
        return f"nodejs{here}.x"
    if major < NODE_MIN:
        notes.add(loc, f"runtime {text}: the router runs Node.js {NODE_MIN} or later; written as "
                       f"{NODE_OLD_TO} "
                       f"(install Node.js 20 and check the code runs on it)")
        return NODE_OLD_TO
    notes.add(loc, f"runtime {text}: needs node {major} on PATH to run (found {version or 'none'})")
    return text


def schedule_source(expression: Any, timezone: str | None, notes: Notes, loc: Loc) -> dict[str, Any] | None:
    """A router ``schedule`` source for an EventBridge ``rate(...)`` or ``cron(...)`` expression."""
    text = str(expression or "").strip()
    rate = _RATE.match(text)
    if rate:
        unit = rate.group(2).lower()[0]  # minute -> m, hour -> h, day -> d
        return {"type": "schedule", "rate": f"{rate.group(1)}{unit}"}
    cron = _CRON.match(text)
    if cron:
        converted = aws_cron(cron.group(1), notes, loc)
        if converted is None:
            return None
        source: dict[str, Any] = {"type": "schedule", "cron": converted}
        if timezone and timezone != "UTC":
            source["timezone"] = timezone
        try:
            cron_trigger(converted, timezone or "UTC")
        except CronError as exc:
            notes.add(loc, f"schedule {text}: not imported: {exc}")
            return None
        return source
    if _AT.match(text):
        notes.add(loc, f"schedule {text}: one-time at() schedules are not supported; route left out")
        return None
    notes.add(loc, f"schedule {text!r}: not a rate() or cron() expression; route left out")
    return None


def aws_cron(expr: str, notes: Notes, loc: Loc) -> str | None:
    """EventBridge's six-field cron (minutes hours day-of-month month day-of-week year; day-of-week 1-7 =
    SUN-SAT) as the router's five-field crontab (day-of-week 0-6 = SUN-SAT)."""
    fields = expr.split()
    if len(fields) != 6:
        notes.add(loc, f"cron({expr}): EventBridge cron has 6 fields (minutes hours day-of-month month "
                       f"day-of-week year), got {len(fields)}; route left out")
        return None
    minute, hour, dom, month, dow, year = fields
    if any(c in f for f in (dom, dow) for c in "LW#"):
        notes.add(loc, f"cron({expr}): L, W and # in day fields are not supported by the router's cron; "
                       "route left out")
        return None
    if year not in ("*", "?"):
        notes.add(loc, f"cron({expr}): the year field ({year}) is dropped: the router's cron has none")
    dom = "*" if dom == "?" else dom
    dow = "*" if dow == "?" else _WEEKDAY_NUMBER.sub(lambda m: str((int(m.group(0)) - 1) % 7), dow)
    if dow != "*" and dom != "*":
        notes.add(loc, f"cron({expr}): both day-of-month and day-of-week set: the router fires when "
                       "either matches, as crontab does")
    return " ".join((minute, hour, dom, month, dow.lower()))


def queue_url(value: Any, notes: Notes, loc: Loc, what: str) -> str:
    """A placeholder for the URL of the queue ``value`` (an SQS ARN, URL or template resource) with
    the URL it would have on AWS as its default; listed, since the router needs the real one."""
    text = str(value)
    logical = value.logical if isinstance(value, ResourceValue) else ""
    m = _SQS_ARN.match(text)
    if m:
        region, account, name = m.groups()
        url = f"https://sqs.{region}.amazonaws.com/{account}/{name}"
    elif text.startswith(("http://", "https://")):
        return text
    else:
        name, url = text, f"https://sqs.us-east-1.amazonaws.com/000000000000/{text}"
    variable = variable_name(logical or name, "url")
    origin = f"the template's queue {logical}" if logical else f"queue {name}"
    notes.add(loc, f"{what}: {origin}: set {variable} to its URL (ElasticMQ, LocalStack or SQS); "
                   f"written as ${{{variable}:-{url}}}")
    return placeholder(variable, url)


def stream_arn(value: Any, kind: str, notes: Notes, loc: Loc, what: str) -> str:
    """The stream ARN as written, or a placeholder when it stands for a stream the template creates."""
    text = str(value)
    if not isinstance(value, ResourceValue):
        return text
    variable = variable_name(value.logical, "stream_arn")
    notes.add(loc, f"{what}: the template's {kind} {value.logical}: set {variable} to its stream ARN; "
                   f"written as ${{{variable}:-{text}}}")
    return placeholder(variable, text)


def broker_name(arn: str) -> str:
    """``orders`` for ``arn:aws:mq:REGION:ACCOUNT:broker:orders:b-1``."""
    return arn.split(":broker:", 1)[1].split(":")[0] if ":broker:" in arn else "broker"


def amqp_url(name: str, notes: Notes, loc: Loc, what: str) -> str:
    """A placeholder broker URL (the template names an Amazon MQ broker, not a URL)."""
    variable = variable_name(name, "amqp_url")
    default = "amqp://guest:guest@localhost:5672/"
    notes.add(loc, f"{what}: set {variable} to the RabbitMQ broker's amqp:// URL (credentials from the "
                   f"broker's secret); written as ${{{variable}:-{default}}}")
    return placeholder(variable, default)


def webhook_source(path: Any, method: Any) -> dict[str, Any]:
    """A ``webhook`` source for an API Gateway path and method (``any`` / ``*`` -> ANY)."""
    text = str(path or "/")
    text = text if text.startswith("/") else f"/{text}"
    verb = str(method or "ANY").upper()
    verb = "ANY" if verb in ("*", "X-AMAZON-APIGATEWAY-ANY-METHOD") else verb
    return {"type": "webhook", "path": text, "methods": [verb]}


def filters(criteria: Any, notes: Notes, loc: Loc) -> list[dict[str, Any]]:
    """Lambda ``FilterCriteria`` (``{Filters: [{Pattern: "<json>"}]}``) as the router's ``filters``."""
    import json

    out: list[dict[str, Any]] = []
    items = criteria.get("Filters", []) if isinstance(criteria, dict) else criteria or []
    for item in items:
        pattern = item.get("Pattern", item.get("pattern")) if isinstance(item, dict) else item
        if isinstance(pattern, str):
            try:
                pattern = json.loads(pattern)
            except ValueError:
                notes.add(loc, "a filter pattern is not valid JSON; left out")
                continue
        if isinstance(pattern, dict):
            out.append(pattern)
    return out


def destination(target: Any, kind: str, functions: dict[str, str], notes: Notes, loc: Loc,
                what: str) -> dict[str, Any] | None:
    """A router destination for Lambda's ``DestinationConfig`` entry: ``kind`` Lambda / SQS / SNS /
    EventBridge / S3 (or "" to tell from the ARN), ``target`` the ARN or resource it resolved to.
    ``functions`` maps names and logical ids of the imported functions to their router names."""
    text = "" if target is None else str(target)
    kind = kind.lower() or (text.split(":")[2] if text.count(":") >= 5 else "")
    if kind in ("lambda", "function"):
        name = text.rsplit(":function:", 1)[-1].split(":")[0] if ":function:" in text else text
        if isinstance(target, ResourceValue):
            name = functions.get(target.logical, name)
        if name in functions:
            return {"type": "function", "function": functions[name]}
        notes.add(loc, f"{what}: function {name or '(none)'} is not in the imported file; add it to the "
                       "config and write {type: function, function: NAME}; destination left out")
        return None
    if kind == "sqs":
        if not text:
            variable = variable_name(what, "queue_url")
            default = "https://sqs.us-east-1.amazonaws.com/000000000000/destination"
            notes.add(loc, f"{what}: SAM creates this queue on deploy: set {variable} to the URL of a queue "
                           f"of yours; written as ${{{variable}:-{default}}}")
            return {"type": "sqs", "queue_url": placeholder(variable, default)}
        return {"type": "sqs", "queue_url": queue_url(target, notes, loc, what)}
    if kind == "sns":
        return {"type": "sns", "topic_arn": topic_arn(target, notes, loc, what)}
    if kind in ("eventbridge", "events"):
        return {"type": "eventbridge", "event_bus_arn": event_bus_arn(target, notes, loc, what)}
    if kind == "s3":
        return {"type": "s3", "bucket_arn": bucket_arn(target, notes, loc, what)}
    notes.add(loc, f"{what}: {kind.upper() or 'this'} destinations are not supported by the router "
                   "(function, sqs, sns, eventbridge, s3, amqp, http, file); destination left out")
    return None


def _arn_or_placeholder(value: Any, notes: Notes, loc: Loc, what: str, *, kind: str, key: str,
                        valid: Callable[[str], bool], name_of: Callable[[str], str],
                        arn_of: Callable[[str], str]) -> str:
    """``value`` as written when it is a ``valid`` ARN, else (a resource the template creates, or a bare
    name) a placeholder: a variable named after the resource (``name_of`` its text), defaulting to
    ``arn_of(name)`` or the ARN written, and a note saying to set it."""
    text = "" if value is None else str(value)
    is_arn = valid(text)
    if is_arn and not isinstance(value, ResourceValue):
        return text
    logical = value.logical if isinstance(value, ResourceValue) else ""
    name = logical or name_of(text)
    default = text if is_arn else arn_of(name)
    variable = variable_name(name, key)
    origin = f"the template's {kind} {logical}" if logical else f"{kind} {name}"
    notes.add(loc, f"{what}: {origin}: set {variable} to its ARN; written as ${{{variable}:-{default}}}")
    return placeholder(variable, default)


def topic_arn(value: Any, notes: Notes, loc: Loc, what: str) -> str:
    """The SNS topic ARN as written, or a placeholder when it stands for a topic the template creates
    (or a bare name)."""
    return _arn_or_placeholder(value, notes, loc, what, kind="topic", key="topic_arn",
                               valid=lambda t: _SNS_ARN.match(t) is not None,
                               name_of=lambda t: t or "topic",
                               arn_of=lambda n: f"arn:aws:sns:us-east-1:000000000000:{n}")


def event_bus_arn(value: Any, notes: Notes, loc: Loc, what: str) -> str:
    """The event bus ARN as written, or a placeholder when it stands for a bus the template creates."""
    return _arn_or_placeholder(value, notes, loc, what, kind="event bus", key="event_bus_arn",
                               valid=lambda t: _EVENT_BUS_ARN.match(t) is not None,
                               name_of=lambda t: t.rsplit("/", 1)[-1] or "default",
                               arn_of=lambda n: f"arn:aws:events:us-east-1:000000000000:event-bus/{n}")


def bucket_arn(value: Any, notes: Notes, loc: Loc, what: str) -> str:
    """The S3 bucket ARN as written, or a placeholder when it stands for a bucket the template creates."""
    return _arn_or_placeholder(
        value, notes, loc, what, kind="bucket", key="bucket_arn",
        valid=lambda t: s3_bucket_of(t) is not None,
        name_of=lambda t: t.rsplit(":", 1)[-1] or "bucket",
        arn_of=lambda n: "arn:aws:s3:::" + _bucket_name(n))


def _bucket_name(name: str) -> str:
    """``name`` made a valid S3 bucket name: lower case, 3-63 of a-z 0-9 . -."""
    return re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip(".-")[:63].ljust(3, "0")


def dead_letter(target: Any, kind: str, notes: Notes, loc: Loc, what: str) -> dict[str, Any] | None:
    """The router's ``async.dead_letter`` for Lambda's ``DeadLetterConfig`` target (an SQS queue or SNS
    topic; ``kind`` SQS / SNS, or "" to tell from the ARN)."""
    text = "" if target is None else str(target)
    kind = kind.lower() or (text.split(":")[2] if text.count(":") >= 5 else "")
    if kind == "sqs":
        return {"queue_url": queue_url(target, notes, loc, what)}
    if kind == "sns":
        return {"topic_arn": topic_arn(target, notes, loc, what)}
    notes.add(loc, f"{what}: a dead-letter target is an SQS queue or an SNS topic; left out")
    return None


def unknown_keys(props: dict[str, Any], known: set[str], ignored: set[str], notes: Notes, loc: Loc,
                 what: str) -> None:
    """List each key of ``props`` the importer neither maps (``known``) nor deliberately skips."""
    for key in props:
        if key not in known and key not in ignored:
            notes.add((*loc, key), f"{what}.{key}: not imported (no router equivalent)")


def add_route(routes: list[dict[str, Any]], route: dict[str, Any], notes: Notes, loc: Loc) -> None:
    """Append ``route`` unless a webhook route already serves one of its methods on its path (two
    events on one path and method, e.g. an Api and an HttpApi event): that one is listed, not added."""
    source = route["source"]
    if source.get("type") == "webhook":
        for other in routes:
            theirs = other["source"]
            if theirs.get("type") != "webhook" or theirs["path"] != source["path"]:
                continue
            shared = set(theirs["methods"]) & set(source["methods"]) or \
                ({"ANY"} if "ANY" in theirs["methods"] + source["methods"] else set())
            if shared:
                notes.add(loc, f"{route['function']}: {' '.join(sorted(shared))} {source['path']} is already "
                               f"served by route {other['name']}; route left out")
                return
    routes.append(route)
