"""An object derived again with the same document is not parsed again (at start most Services arrive after
their HTTPScaledObjects, and each arrival derives the objects naming it once more)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from extproc.core import httpso
from extproc.core.httpso import InvalidSpec
from extproc.providers.kubernetes import targets
from extproc.providers.kubernetes.targets import ParseMemo, entry
from tests.kube.harness import httpso as httpso_doc


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = httpso.parse

    def counting(document: Any, *args: Any, **kwargs: Any) -> httpso.ScaledTarget:
        seen.append(document["metadata"]["name"])
        return real(document, *args, **kwargs)

    monkeypatch.setattr(targets.httpso, "parse", counting)
    return seen


def test_the_same_document_is_parsed_once(parses: list[str]) -> None:
    memo = ParseMemo()
    document = httpso_doc("app", hosts=["app.test"])
    no_service = entry(document, lambda _key: None, memo=memo)
    with_service = entry(document, lambda _key: {"spec": {"ports": [{"name": "http", "port": 8080}]}}, memo=memo)
    assert parses == ["app"]
    assert no_service.target is with_service.target
    assert not no_service.condition.ready
    assert with_service.condition.ready


def test_a_new_document_is_parsed_again(parses: list[str]) -> None:
    memo = ParseMemo()
    document = httpso_doc("app", hosts=["app.test"])
    entry(document, lambda _key: None, memo=memo)
    changed = copy.deepcopy(document)
    changed["spec"]["hosts"] = ["other.test"]
    derived = entry(changed, lambda _key: None, memo=memo)
    assert parses == ["app", "app"]
    assert derived.target is not None
    assert derived.target.hosts == ("other.test",)


def test_a_forgotten_object_is_parsed_again(parses: list[str]) -> None:
    memo = ParseMemo()
    document = httpso_doc("app", hosts=["app.test"])
    memo.parse(document, httpso.KIND)
    memo.forget(httpso.KIND, ("default", "app"))
    memo.parse(document, httpso.KIND)
    assert parses == ["app", "app"]


def test_an_invalid_document_gives_the_same_condition_each_time(parses: list[str]) -> None:
    memo = ParseMemo()
    document = httpso_doc("app", hosts=["app.test"])
    document["spec"]["hosts"] = "not a list"
    with pytest.raises(InvalidSpec) as plain:
        httpso.parse(document)
    first = entry(document, lambda _key: None, memo=memo)
    second = entry(document, lambda _key: None, memo=memo)
    assert parses == ["app", "app"]  # the plain parse above, then the memo's one
    assert first.condition == second.condition
    assert first.condition.message == str(plain.value)
