import pytest

import payq
from payq import errors
from payq._native import core


@pytest.mark.parametrize("name", errors.__all__)
def test_cpp_error_arrives_as_its_python_class(name):
    cls = getattr(payq, name)
    with pytest.raises(cls) as info:
        core._raise_for_test(name)
    assert type(info.value) is cls
    assert isinstance(info.value, payq.Error)


def test_database_error_carries_sqlstate():
    with pytest.raises(payq.DatabaseError) as info:
        core._raise_for_test("DatabaseError")
    assert info.value.sqlstate == "22012"


def test_commit_unknown_is_a_database_error_but_not_transient():
    assert issubclass(payq.CommitUnknown, payq.DatabaseError)
    assert not issubclass(payq.CommitUnknown, payq.TransientError)


def test_value_errors_are_also_python_value_errors():
    assert issubclass(payq.InvalidAmount, ValueError)
    assert issubclass(payq.InvalidArgument, ValueError)


def test_sql_error_from_server_keeps_type_and_sqlstate(payq_db):
    with pytest.raises(payq.DatabaseError) as info:
        with payq_db.transaction() as t:
            t.execute("SELECT 1/0")
    assert info.value.sqlstate == "22012"
