"""Error messages read well: money in its currency's notation, no word
said twice."""

from __future__ import annotations

import argparse
import io
import re
import tokenize
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import payq
from payq.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
# A word said twice; not a part of a hyphenated word ("day-of-month month",
# CSS classes such as "state state-dead").
DOUBLED = re.compile(r"(?<![-\w])([A-Za-z]{2,})\s+\1\b(?!-)", re.IGNORECASE)
# Repeats that are meant: SQL closing two CASEs, and a module's name
# heading a code example or a script ("import sys" then "sys.argv").
MEANT = {"END END", "sys sys", "payq payq"}
CPP_LITERAL = re.compile(r'R"(\w*)\((.*?)\)\1"|"((?:[^"\\\n]|\\.)*)"', re.S)


def _cpp_messages(text: str) -> Iterator[Tuple[int, str]]:
    """String literals, those joined by whitespace or `+` read as one."""
    line, joined, end = 0, "", -1
    for match in CPP_LITERAL.finditer(text):
        literal = match.group(2) if match.group(2) is not None else match.group(3)
        if end >= 0 and re.fullmatch(r"[\s+]*", text[end:match.start()]):
            joined += literal
        else:
            if end >= 0:
                yield line, joined
            line, joined = text.count("\n", 0, match.start()) + 1, literal
        end = match.end()
    if end >= 0:
        yield line, joined


# Python 3.12 splits an f-string into parts around its placeholders.
_STRING_TOKENS = {tokenize.STRING} | {getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE",
                                                                         "FSTRING_END") if hasattr(tokenize, name)}


def _python_messages(text: str) -> Iterator[Tuple[int, str]]:
    """String literals (f-strings included), adjacent ones read as one."""
    line, joined = 0, ""
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in _STRING_TOKENS:
            if not joined:
                line = token.start[0]
            joined += " " + token.string
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT) and joined:
            yield line, joined
            joined = ""
    if joined:
        yield line, joined


def _doubled(text: str) -> List[str]:
    # The quotes and f prefixes of joined literals are not words.
    plain = re.sub(r"(?<=\s)f(?=[\"'])|[\"']", " ", text)
    return [m.group(0) for m in DOUBLED.finditer(plain) if " ".join(m.group(0).split()) not in MEANT]


def _source_findings() -> List[str]:
    findings = []
    sources = [*ROOT.glob("cpp/**/*.[ch]pp"), *ROOT.glob("bindings/*.cpp"), *ROOT.glob("python/payq/**/*.py")]
    for path in sorted(sources):
        text = path.read_text()
        messages = _python_messages(text) if path.suffix == ".py" else _cpp_messages(text)
        for line, message in messages:
            findings += [f"{path.relative_to(ROOT)}:{line}: {d!r}" for d in _doubled(message)]
    return findings


def _autocommit_refusals(dsn: str) -> Iterator[str]:
    """The refusal of a connection in autocommit mode, from each driver.
    psycopg 3 calls its class `Connection`, psycopg 2 `connection`: a
    message naming a connection by its class said the word twice."""
    import psycopg
    import psycopg2

    for connect in (lambda: psycopg.connect(dsn, autocommit=True), lambda: psycopg2.connect(dsn)):
        connection = connect()
        try:
            connection.autocommit = True
            with pytest.raises(payq.InvalidArgument) as refused:
                payq.app_executor(connection)
            yield str(refused.value)
        finally:
            connection.close()


def test_messages_say_no_word_twice(payq_dsn: str) -> None:
    # Literal messages in the C++ core, the binding and the Python package.
    assert _source_findings() == []
    # Messages put together at run time: a connection named by its class.
    refusals = list(_autocommit_refusals(payq_dsn))
    assert len(refusals) == 2 and all("autocommit" in r for r in refusals)
    assert [r for r in refusals if DOUBLED.search(r)] == []
    # The command's help.
    helps = [action.help or "" for parser in _all_parsers(_parser()) for action in parser._actions]
    assert len(helps) > 50 and [h for h in helps if DOUBLED.search(h)] == []


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _all_parsers(child)


def test_insufficient_funds_says_the_amounts_in_the_currencys_notation(payq_db: payq.Database) -> None:
    ledger = payq_db.ledger
    world = ledger.account("world", "USD", "system", allow_negative=True)
    alice = ledger.account("alice", "USD")
    ledger.transfer(world, alice, "10.00", key="fund")
    with pytest.raises(payq.InsufficientFunds) as held:
        ledger.hold(alice, "999.00", key="too-much-held")
    assert f"account {alice.id} has 10.00 USD available, 999.00 USD needed" in str(held.value)
    with pytest.raises(payq.InsufficientFunds) as moved:
        ledger.transfer(alice, world, "999.00", key="too-much-moved")
    assert "10.00 USD available, 999.00 USD needed" in str(moved.value)
    assert "minor units" not in str(held.value) + str(moved.value)
    yen = ledger.account("bob", "JPY")
    with pytest.raises(payq.InsufficientFunds) as no_yen:
        ledger.hold(yen, 500, key="yen")
    assert "0 JPY available, 500 JPY needed" in str(no_yen.value)
