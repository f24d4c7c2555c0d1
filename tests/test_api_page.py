"""docs/api.md's error table is the contract: every error code crossover_serving/ can answer, with its status."""

from __future__ import annotations

import ast
import re

from tests.conftest import ROOT

ERRORS = {"InputError", "_Refused"}  # crossover_serving.errors.InputError and its subclasses: status=, code= keywords
HEADS = {"_refuse_head"}  # the server's answers to a head the parser refuses: (status, code, message)


def _dicts(tree: ast.Module) -> dict[str, ast.Dict]:
    """Module-level ``NAME = {...}`` answers (FAULT, NOT_FOUND), by name."""
    return {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict) for target in node.targets if isinstance(target, ast.Name)}


def _error_code(node: ast.expr | None, named: dict[str, ast.Dict]) -> str | None:
    body = named.get(node.id) if isinstance(node, ast.Name) else node
    if not isinstance(body, ast.Dict):
        return None
    for key, value in zip(body.keys, body.values, strict=True):
        if isinstance(key, ast.Constant) and key.value == "error" and isinstance(value, ast.Constant):
            return str(value.value)
    return None


def answers_in_the_code() -> set[tuple[str, int]]:
    """(code, status) of every error answer crossover_serving/ builds: InputError(..., status=, code=) and every call
    given a literal status and an ``{"error": code}`` body (``_json``, ``_respond``)."""
    found: set[tuple[str, int]] = set()
    for source in sorted((ROOT / "crossover_serving").glob("*.py")):
        tree = ast.parse(source.read_text())
        named = _dicts(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            keywords = {k.arg: k.value for k in node.keywords}
            if name in HEADS and all(isinstance(a, ast.Constant) for a in node.args[:2]):
                found.add((str(node.args[1].value), int(node.args[0].value)))  # type: ignore[attr-defined]
            if name in ERRORS and isinstance(keywords.get("code"), ast.Constant):
                status = keywords.get("status")
                found.add((keywords["code"].value, status.value if isinstance(status, ast.Constant) else 400))
            statuses = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, int)]
            codes = [c for a in node.args if (c := _error_code(a, named))]
            if statuses and codes:
                found.add((codes[0], statuses[0]))
        # The one answer written by hand: a request the HTTP parser refuses, before any route exists.
        if "def send_400_response" in source.read_text():
            found.add(("bad_request", 400))
    return found


def test_the_api_page_lists_exactly_the_errors_serving_answers() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    documented = {(code, int(status)) for code, status in re.findall(r"^\| `([a-z_]+)` \| (\d{3}) \|", page, re.M)}
    in_code = answers_in_the_code()
    assert len(in_code) > 20  # the scan finds the answers (it would find none if crossover_serving/ changed shape)
    assert documented - in_code == set(), "documented but never answered"
    assert in_code - documented == set(), "answered but not in docs/api.md"


def test_the_api_page_states_the_limits_serving_enforces() -> None:
    from crossover_serving.api import MAX_JSON_BYTES
    from crossover_serving.fetch import FetchPolicy
    from crossover_serving.images import MAX_PIXELS
    from crossover_serving.server import Limits

    page = (ROOT / "docs" / "api.md").read_text()
    assert f"{FetchPolicy().max_bytes // 2**20} MiB" in page and f"{MAX_JSON_BYTES // 1024} KiB" in page
    assert f"{MAX_PIXELS // 1_000_000} million pixels" in page and f"{Limits().deadline_s:g} s from its" in page
