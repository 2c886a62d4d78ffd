"""What the code says must exist in the cloud: the function targets, their triggers and the topics.

The deploy script never keeps its own list of functions or topics. It reads them from the same
places the local stack is wired from:

* `main.py` exports every function target (one Cloud Function each), and the functions-framework
  decorator on each one says whether it is an HTTP or a CloudEvent function;
* `infra.stack.HTTP_FUNCTIONS` / `EVENT_FUNCTIONS` say how each target is triggered, and
  `infra.stack.TOPICS` names the topics (keys are the `*_topic` fields of `common.config.Settings`);
* `common.config.Settings` holds the topic names the code publishes to.

Anything these sources disagree on raises `TopologyError`, so a new target that was added to
`main.py` but not wired (or wired as the wrong kind) stops the deploy, and the dry-run, before a
single command is printed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from common.config import Settings
from infra import stack

Kind = Literal["http", "event"]

# What functions-framework records for each decorator, and the trigger kind it implies.
_SIGNATURE_KIND: dict[str, Kind] = {"http": "http", "cloudevent": "event"}


class TopologyError(Exception):
    """The code's function targets, local wiring and settings do not agree."""


@dataclass(frozen=True)
class Function:
    name: str
    kind: Kind
    topic_key: str | None = None  # the Settings field naming its trigger topic (event functions)
    topic: str | None = None  # that topic's name


def setting_default(field: str) -> Any:
    """A Settings field's default: what the deployed code uses unless the deploy sets SYNQ_<FIELD>."""
    info = Settings.model_fields.get(field)
    if info is None:
        raise TopologyError(f"common.config.Settings has no field {field!r}")
    return info.default


def main_targets() -> dict[str, str]:
    """Every target main.py exports, with the signature type its functions-framework decorator registered.

    Importing main.py is what functions-framework does in the cloud, so this sees exactly the
    targets a deploy can use. It creates no client (common.clients is lazy), so it runs offline.
    """
    main = importlib.import_module("main")
    # functions-framework keeps the decorator's verdict in this registry (keyed by the function's
    # __name__); there is no public accessor, and requirements.txt pins the version.
    from functions_framework import _function_registry

    names: Sequence[str] | None = getattr(main, "__all__", None)
    if names is None:
        names = [n for n, v in vars(main).items() if not n.startswith("_") and callable(v)]
    targets: dict[str, str] = {}
    problems = []
    for name in names:
        obj = getattr(main, name, None)
        if obj is None or not callable(obj):
            problems.append(f"main.py exports {name!r}, which is not a function")
            continue
        signature = _function_registry.REGISTRY_MAP.get(getattr(obj, "__name__", name))
        if signature is None:
            if getattr(main, "__all__", None) is not None:
                problems.append(f"main.py target {name!r} has no @functions_framework.http or @functions_framework.cloud_event decorator")
            continue
        targets[name] = signature
    if problems:
        raise TopologyError("\n".join(problems))
    return targets


def topics(
    wired: Mapping[str, str] = stack.TOPICS,
) -> dict[str, str]:
    """Every topic the code uses, by Settings field: the locally wired ones and every `*_topic` setting."""
    found: dict[str, str] = {}
    problems = []
    for key in sorted({*wired, *(f for f in Settings.model_fields if f.endswith("_topic"))}):
        default = setting_default(key) if key in Settings.model_fields else None
        local = wired.get(key)
        if default is None:
            problems.append(f"infra.stack.TOPICS has {key!r}, which is not a common.config.Settings field")
        elif local is not None and local != default:
            # The local stack would wire a different topic than the deployed code publishes to.
            problems.append(f"topic {key!r} is {local!r} in infra.stack.TOPICS but {default!r} in common.config.Settings")
        found[key] = str(local or default)
    if problems:
        raise TopologyError("\n".join(problems))
    return found


def functions(
    targets: Mapping[str, str] | None = None,
    http: Sequence[str] = stack.HTTP_FUNCTIONS,
    events: Mapping[str, str] = stack.EVENT_FUNCTIONS,
    wired_topics: Mapping[str, str] = stack.TOPICS,
) -> list[Function]:
    """The functions to deploy, in main.py's order, each with its trigger; raises on any disagreement."""
    targets = main_targets() if targets is None else targets
    topic_names = topics(wired_topics)
    problems = []
    found = []
    for name, signature in targets.items():
        kind = _SIGNATURE_KIND.get(signature)
        if name in http and name in events:
            problems.append(f"{name!r} is in both infra.stack.HTTP_FUNCTIONS and EVENT_FUNCTIONS")
        elif name in http:
            if kind != "http":
                problems.append(f"{name!r} is an HTTP function in infra.stack but main.py registers it as {signature!r}")
            found.append(Function(name, "http"))
        elif name in events:
            if kind != "event":
                problems.append(f"{name!r} is an event function in infra.stack but main.py registers it as {signature!r}")
            key = events[name]
            if key not in topic_names:
                problems.append(f"{name!r} is triggered by {key!r}, which is not a topic in infra.stack.TOPICS")
                continue
            found.append(Function(name, "event", key, topic_names[key]))
        else:
            problems.append(
                f"main.py target {name!r} is in neither infra.stack.HTTP_FUNCTIONS nor EVENT_FUNCTIONS: "
                "wire it there (the local stack and the deploy both read them)"
            )
    for name in [*http, *events]:
        if name not in targets:
            problems.append(f"infra.stack wires {name!r}, but main.py does not export it")
    if problems:
        raise TopologyError("\n".join(problems))
    return found
