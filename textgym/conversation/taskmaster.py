"""Taskmaster-4 coffee ordering as goal-oriented dialogue (``taskmaster4_order``).

Each conversation's goal is the order its customer placed: the drinks, quantities, options
(``attributes``) and add-ons of its logged ``add_order_item`` API calls. The agent is the
barista; it places the order in the data set's own API-call form, one line per drink::

    [API call add_order_item: {"menu_item_id": "latte", "quantity": "1",
      "attributes": [{"attribute_id": "milk-options", "option": "Oat Milk"}],
      "addons": [{"addon_id": "chocolate-sauce", "option": "ADD"}]}]

and may look a drink up with ``[API call get_menu_items: {"query": "latte"}]``, which the env
answers from the conversation's logged menu responses (``[API result get_menu_items: ...]``).
The final reward ``order_success`` gives partial credit per slot (see :func:`order_success`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from textgym.conversation.simulators import TOOL_RESULT_PREFIX
from textgym.tasks.base import ChatMessages, Sample
from textgym.tasks.datasets.dialogue import TASKMASTER4_DATA
from textgym.tasks.datasets.loading import PathLike
from textgym.tasks.datasets.records import DataFormatError, Row, require_field, require_text

ORDER_INSTRUCTION = (
    "You take drink orders at a coffee bar. Ask the customer what they want until you know "
    "the whole order, then place it with one line per drink in this form: [API call "
    'add_order_item: {"menu_item_id": "latte", "quantity": "1", "attributes": '
    '[{"attribute_id": "milk-options", "option": "Oat Milk"}], "addons": [{"addon_id": '
    '"chocolate-sauce", "option": "ADD"}]}]. To look a drink up on the menu, write [API call '
    'get_menu_items: {"query": "latte"}]. Reply with your next message only.'
)

_CALL = re.compile(r"\[API call (\w+):\s*")
_ID_SUFFIX = re.compile(r"[-_ ]?\d+$")


def api_calls(text: str) -> list[tuple[str, Any]]:
    """``(name, request)`` of every ``[API call name: {json}]`` in ``text`` whose JSON parses.

    >>> api_calls('Sure. [API call add_order_item: {"menu_item_id": "mocha-1", "quantity": "2"}]')
    [('add_order_item', {'menu_item_id': 'mocha-1', 'quantity': '2'})]
    """
    decoder = json.JSONDecoder()
    calls = []
    for match in _CALL.finditer(text):
        try:
            request, _ = decoder.raw_decode(text, match.end())
        except ValueError:
            continue
        calls.append((match.group(1), request))
    return calls


def _name(item_id: Any) -> str:
    """``"chai-latte-1928"`` -> ``"chai latte"``: an id without its number, as words."""
    return _ID_SUFFIX.sub("", str(item_id).strip().lower()).replace("-", " ").replace("_", " ")


def order_item(request: Any) -> dict[str, Any] | None:
    """An ``add_order_item`` request as comparable slots, or None when it names no drink.

    >>> order_item({"menu_item_id": "latte-4456", "quantity": "1",
    ...             "attributes": [{"attribute_id": "hot-or-iced", "option": "Iced"}],
    ...             "addons": [{"addon_id": "chocolate-sauce-447", "option": "ADD"}]})
    {'drink': 'latte', 'quantity': '1', 'attributes': {'hot-or-iced': 'iced'}, 'addons': ['chocolate sauce']}
    """
    if not isinstance(request, Mapping) or not request.get("menu_item_id"):
        return None
    attributes = {}
    for a in request.get("attributes") or []:
        if isinstance(a, Mapping) and "attribute_id" in a:
            attributes[str(a["attribute_id"]).lower()] = str(a.get("option", "")).lower()
    addons = sorted(
        _name(a["addon_id"])
        for a in request.get("addons") or []
        if isinstance(a, Mapping)
        and "addon_id" in a
        and str(a.get("option", "ADD")).upper() != "NO"
    )
    quantity = str(request.get("quantity", "1")).strip() or "1"
    return {
        "drink": _name(request["menu_item_id"]),
        "quantity": quantity,
        "attributes": attributes,
        "addons": addons,
    }


def slot_credit(goal: Mapping[str, Any], placed: Mapping[str, Any]) -> float:
    """The share of ``goal``'s slots (drink, quantity, each attribute, each add-on) that
    ``placed`` fills with the same value."""
    slots = [("drink", goal["drink"]), ("quantity", goal["quantity"])]
    slots += [(("attr", k), v) for k, v in goal["attributes"].items()]
    slots += [(("addon", a), True) for a in goal["addons"]]
    have = {"drink": placed["drink"], "quantity": placed["quantity"]}
    have.update({("attr", k): v for k, v in placed["attributes"].items()})
    have.update({("addon", a): True for a in placed["addons"]})
    return sum(have.get(k) == v for k, v in slots) / len(slots)


def placed_items(messages: ChatMessages) -> list[dict[str, Any]]:
    """The order items the agent placed in its turns, in order."""
    items = []
    for m in messages:
        if m["role"] == "assistant":
            for name, request in api_calls(m["content"]):
                item = order_item(request) if name == "add_order_item" else None
                if item is not None:
                    items.append(item)
    return items


def order_success(
    prompts: list[str], completions: list[str], references: Any, **meta: Any
) -> np.ndarray:
    """Partial credit per slot: each goal drink is matched with the placed item that fills
    most of its slots; the sum of those credits is divided by the larger of the goal's and
    the placed items' counts (so extra items cost credit). 1.0 is the exact order, 0.0 is no
    order placed.

    >>> goal = [order_item({"menu_item_id": "mocha-1", "quantity": "1",
    ...                     "attributes": [{"attribute_id": "milk-options", "option": "Oat Milk"}]})]
    >>> turn = '[API call add_order_item: {"menu_item_id": "mocha", "quantity": "1"}]'
    >>> order_success([""], [""], None, order=[goal],
    ...               messages=[[{"role": "assistant", "content": turn}]]).tolist()
    [0.6666666865348816]
    """
    messages_batch = meta.get("messages") or [
        [{"role": "assistant", "content": c}] for c in completions
    ]
    out = []
    for messages, goal in zip(messages_batch, meta["order"], strict=True):
        placed = placed_items(messages)
        if not placed:
            out.append(0.0)
            continue
        best = sum(max(slot_credit(g, p) for p in placed) for g in goal)
        out.append(best / max(len(goal), len(placed)))
    return np.asarray(out, dtype=np.float32)


order_success.name = "order_success"  # type: ignore[attr-defined]


def menu_lookup(messages: ChatMessages, meta: Mapping[str, Any]) -> str | None:
    """Answers the ``get_menu_items`` calls of the agent's last turn from the conversation's
    logged menu responses (an empty menu for a drink the log never looked up)."""
    lines = []
    for name, request in api_calls(messages[-1]["content"]):
        if name == "get_menu_items" and isinstance(request, Mapping):
            query = str(request.get("query", "")).strip().lower()
            response = meta["menu"].get(query, '{"menu_items": []}')
            lines.append(f"{TOOL_RESULT_PREFIX} get_menu_items: {response}]")
    return "\n".join(lines) or None


def describe(order: list[dict[str, Any]]) -> str:
    """The goal in words, for an LM or a person playing the customer.

    >>> describe([{"drink": "latte", "quantity": "2", "attributes": {"milk-options": "oat milk"},
    ...            "addons": ["vanilla syrup"]}])
    'order 2 latte (milk-options: oat milk) with vanilla syrup'
    """
    parts = []
    for item in order:
        text = f"{item['quantity']} {item['drink']}"
        if item["attributes"]:
            text += " (" + ", ".join(f"{k}: {v}" for k, v in item["attributes"].items()) + ")"
        if item["addons"]:
            text += " with " + " and ".join(item["addons"])
        parts.append(text)
    return "order " + "; ".join(parts)


def _logged_calls(utterance: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    """The API call groups (``api_call``, ``request``, ``response`` ...) of one utterance."""
    annotations = utterance.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataFormatError(f"{where}: field 'annotations' must be a list")
    groups: dict[str, dict[str, str]] = {}
    for a in annotations:
        if isinstance(a, dict) and {"name", "value"} <= set(a):
            # "api_call_0" and "api_response_0" are one call: group by the trailing number.
            key = str(a.get("context", "")).rsplit("_", 1)[-1]
            groups.setdefault(key, {})[str(a["name"])] = str(a["value"])
    return list(groups.values())


def taskmaster4_order(
    path: PathLike | None = None,
    *,
    split: Mapping[str, str] | None = None,
    max_samples: int | None = None,
    instruction: str = ORDER_INSTRUCTION,
    holdout: float = 0.05,
) -> Any:
    """Taskmaster-4 conversations with a placed order, as dialogues to hold (local files).

    The opening is ``instruction`` (system) and the customer's first message; ``meta`` holds
    ``goal`` (the order in words, for LM or human users), ``order`` (the slots the reward
    checks), ``user_turns`` (the customer's later logged messages, for the replay user) and
    ``menu`` (logged menu look-ups). Conversations whose order cannot be read are skipped;
    validation and test are held out by conversation id. Default user: ``replay``.
    """
    from textgym.conversation.tasks import ConversationTask

    def convert(row: Row, where: str) -> list[Sample]:
        utterances = require_field(row, "utterances", where)
        if not isinstance(utterances, list) or not utterances:
            raise DataFormatError(f"{where}: field 'utterances' must be a non-empty list")
        turns: list[tuple[str, str]] = []
        order, menu = [], {}
        for j, u in enumerate(utterances):
            uwhere = f"{where} utterance {j}"
            if not isinstance(u, dict):
                raise DataFormatError(f"{uwhere}: expected a JSON object")
            speaker = require_field(u, "speaker", uwhere)
            text = require_text(u, "text", uwhere).strip()
            if turns and turns[-1][0] == speaker:
                turns[-1] = (speaker, turns[-1][1] + "\n" + text)
            else:
                turns.append((speaker, text))
            for call in _logged_calls(u, uwhere):
                try:
                    request = json.loads(call.get("request", "{}"))
                except ValueError:
                    continue
                if call.get("api_call") == "add_order_item":
                    item = order_item(request)
                    if item is not None:
                        order.append(item)
                elif call.get("api_call") == "get_menu_items" and "response" in call:
                    menu[str(request.get("query", "")).strip().lower()] = call["response"]
        if not order or turns[0][0] != "user":
            return []
        opening = ([{"role": "system", "content": instruction}] if instruction else []) + [
            {"role": "user", "content": turns[0][1]}
        ]
        meta = {
            "goal": describe(order),
            "order": order,
            "user_turns": [text for speaker, text in turns[1:] if speaker == "user"],
            "menu": menu,
            "id": str(row.get("conversation_id", "")),
        }
        return [Sample(opening, (), meta)]

    splits = TASKMASTER4_DATA.load(
        convert, path=path, source="local", split=split, max_samples=max_samples, holdout=holdout
    )
    return ConversationTask(
        "taskmaster4_order",
        splits,
        default_reward=order_success,
        default_user="replay",
        tool=menu_lookup,
        description="Take a coffee order and place it as API calls (Taskmaster-4, CC BY 4.0).",
    )
