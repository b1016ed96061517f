from sqlalchemy import Engine
from sqlalchemy.orm import Session

from sa_crablet import AppendCondition, ConcurrencyError, Event, EventStore, Query
from tests.conftest import count_events


def test_append_read_and_conflict(engine: Engine) -> None:
    with Session(engine) as session:
        store = EventStore(session)
        assert store.append([Event("A", ["t:1"], {"x": 1}), Event("B", ["t:1", "u:2"])]) == 2
        session.commit()
    with Session(engine) as session:
        store = EventStore(session)
        result = store.read(Query.of(tags=["t:1"]))
        assert [e.type for e in result] == ["A", "B"]
        assert result.head.position == 2
    with Session(engine) as session:
        store = EventStore(session)
        try:
            store.append(Event("C", ["t:1"]), AppendCondition(Query.of(tags=["t:1"]), 1))
        except ConcurrencyError as error:
            assert error.position == 2
        else:
            raise AssertionError("expected a conflict")
    assert count_events(engine) == 2
