"""The protocol is named once: no module outside ``unison_sdk/protocol/`` spells a message type
or a close code itself (docs/protocol.md).

The check reads the source with ``ast`` (no import) of every module of ``unison_stream/`` and
``sdk/unison_sdk/`` and reports, with file and line:

- a dict literal (or ``dict(type=…)``) whose ``"type"`` is a message type name as a string
  (an SDP's ``type="offer"`` / ``"answer"`` is WebRTC's, not ours);
- a comparison of a message type name with what was read from a message's ``"type"``
  (``m["type"]``, ``m.get("type")``, or a name assigned from one of those in the same scope);
- script text inside a string (a page's JavaScript) that sends or tests a message type by name
  (``type: "say"``, ``.type === "utterance"``);
- a close code integer (4000, 4001, 4408, 4409) assigned to a name, passed as ``code=``,
  compared against, or used as a dict key.

Strings that happen to equal a type name elsewhere ("close" as a replica op, "error" as a dict
key) are not the protocol and are not reported.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from unison_sdk.protocol import CLIENT_TYPES, FINAL_CLOSE, SERVER_TYPES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "unison_stream", ROOT / "sdk" / "unison_sdk")
PROTOCOL_DIR = ROOT / "sdk" / "unison_sdk" / "protocol"
TYPE_NAMES = frozenset(CLIENT_TYPES) | frozenset(SERVER_TYPES)
CLOSE_CODES = frozenset(FINAL_CLOSE)

# Leftovers in modules another area owns, each named exactly (file → count): an entry that no
# longer matches fails too, so the list only shrinks. Empty is the goal.
PENDING: dict[str, int] = {}


# in embedded JavaScript: ``type: "x"`` (a message built) or ``type === "x"`` (one tested)
_SCRIPT_TYPE = re.compile(r"""\btype\s*(?::|===?|!==?)\s*["'](\w+)["']""")


def _str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_close_code(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value in CLOSE_CODES


def _reads_type(node: ast.AST, type_vars: set[str]) -> bool:
    """``x["type"]``, ``x.get("type")`` or a name holding one of them."""
    if isinstance(node, ast.Subscript):
        return _str(node.slice) == "type"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "get" and bool(node.args) and _str(node.args[0]) == "type"
    return isinstance(node, ast.Name) and node.id in type_vars


def _type_vars(scope: ast.AST) -> set[str]:
    """Names assigned from a message's ``"type"`` anywhere in ``scope``."""
    names: set[str] = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and _reads_type(node.value, set()):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _names_in(node: ast.AST) -> Iterator[str]:
    """The string constants of an operand: itself, or the items of a literal tuple/list/set."""
    items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
    for item in items:
        if (s := _str(item)) is not None:
            yield s


def violations(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every place ``tree`` names the protocol itself (module docstring)."""
    found: list[tuple[int, str]] = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    type_vars = {id(s): _type_vars(s) for s in scopes}
    scope_of: dict[int, set[str]] = {}
    for s in scopes:  # innermost scope last, so it wins
        for n in ast.walk(s):
            scope_of[id(n)] = type_vars[id(s)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if _str(k) == "type" and _str(v) in TYPE_NAMES:
                    found.append((node.lineno, f'{{"type": {_str(v)!r}}}'))
                if _is_close_code(k):
                    found.append((node.lineno, "a close code as a key"))
        elif isinstance(node, ast.Call):
            is_dict = isinstance(node.func, ast.Name) and node.func.id == "dict"
            for kw in node.keywords:  # (``RTCSessionDescription(type="offer")`` is SDP's own)
                if is_dict and kw.arg == "type" and _str(kw.value) in TYPE_NAMES:
                    found.append((node.lineno, f"type={_str(kw.value)!r}"))
                if kw.arg == "code" and _is_close_code(kw.value):
                    found.append((node.lineno, "a close code as code="))
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            tv = scope_of.get(id(node), set())
            if any(_reads_type(o, tv) for o in operands):
                for o in operands:
                    found += [(node.lineno, f"compared with {s!r}") for s in _names_in(o)
                              if s in TYPE_NAMES]  # fmt: skip
            if any(_is_close_code(o) for o in operands):
                found.append((node.lineno, "compared with a close code"))
        elif isinstance(node, ast.Assign | ast.AnnAssign) and _is_close_code(node.value):
            found.append((node.lineno, "a close code assigned"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for name in _SCRIPT_TYPE.findall(node.value):
                if name in TYPE_NAMES:
                    found.append((node.lineno, f"script names {name!r}"))
        elif isinstance(node, ast.match_case):
            for pat in ast.walk(node.pattern):
                if isinstance(pat, ast.MatchValue) and _str(pat.value) in TYPE_NAMES:
                    found.append((pat.lineno, f"case {_str(pat.value)!r}"))
    return found


def _modules() -> Iterator[Path]:
    for pkg in PACKAGES:
        for path in sorted(pkg.rglob("*.py")):
            if PROTOCOL_DIR not in path.parents and "__pycache__" not in path.parts:
                yield path


def test_no_module_outside_the_protocol_names_message_types_or_close_codes() -> None:
    by_file: dict[str, list[tuple[int, str]]] = {}
    for path in _modules():
        found = violations(ast.parse(path.read_text(), str(path)))
        if found:
            by_file[str(path.relative_to(ROOT))] = found
    unexpected = {f: v for f, v in by_file.items() if len(v) != PENDING.get(f, 0)}
    gone = {f: n for f, n in PENDING.items() if f not in by_file}
    assert not unexpected, f"name them through unison_sdk.protocol instead: {unexpected}"
    assert not gone, f"fixed: remove these from PENDING: {gone}"


def test_the_check_finds_each_kind_of_leftover() -> None:
    """The detector itself, on a module written the ways the leftovers were."""
    src = '''
CLOSE_IDLE = 4408
def f(msg, ws):
    kind = msg.get("type")
    if kind == "utterance":
        pass
    if msg["type"] in ("pong", "stats"):
        pass
    ws.send({"type": "ping", "id": "p"})
    ws.close(code=4000)
    dict(type="say")
    RTCSessionDescription(sdp="", type="answer")
    match msg["type"]:
        case "ready":
            pass
JS = """u.send({ type: "interrupt" }); m.type === "utterance"; r.type === "inbound-rtp" """
def g(job, op):
    return job.kind == "utterance" or op == "close" or {"error": "x", "type": "video"}
'''
    got = violations(ast.parse(src))
    assert sorted(line for line, _ in got) == [2, 5, 7, 7, 9, 10, 11, 14, 16, 16], got


def test_the_protocol_module_is_where_they_are() -> None:
    """The names the check looks for come from the module, and it defines them all."""
    assert {"say", "offer", "ack", "ready", "utterance", "error"} <= TYPE_NAMES
    assert {4000, 4001, 4408, 4409} == CLOSE_CODES
    found = [
        v for p in sorted(PROTOCOL_DIR.glob("*.py")) for v in violations(ast.parse(p.read_text()))
    ]
    assert found, "the protocol module itself defines them (the check sees definitions)"
