"""Saved queries in a real store: owners, visibility enforced in the queries, edit, fork."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from pipeline.store import Store
from pipeline.store.saved_queries import SavedQueryError

T = datetime(2026, 12, 2, 12, 0, 0)
SPEC = {"variable_only": True, "flux_min_jy": 0.05, "sort_by": "eta"}


@pytest.fixture
def queries(store):
    ids = {vis: store.save_query(owner="ana", page="sources", name=f"{vis} variables",
                                 spec=SPEC, visibility=vis, now=T)
           for vis in ("private", "team", "public")}
    return store, ids


@pytest.mark.parametrize(("reader", "sees"), [
    ("ana", {"private", "team", "public"}),   # the owner
    ("bob", {"team", "public"}),              # another signed-in user
    (None, {"public"}),                       # signed out
])
def test_each_reader_sees_exactly_what_visibility_allows(queries, reader, sees):
    store, ids = queries
    listed = store.saved_queries(reader=reader)
    assert set(listed["visibility"]) == sees
    for vis, qid in ids.items():
        opened = store.saved_query(qid, reader=reader)
        assert (opened is not None) == (vis in sees), (reader, vis)
    if reader == "ana":
        assert store.saved_query(ids["private"], reader="ana").spec == SPEC


def test_a_private_query_cannot_be_changed_forked_or_deleted_by_another(queries):
    store, ids = queries
    for call in (lambda: store.update_query(ids["private"], by="bob", now=T, name="mine"),
                 lambda: store.fork_query(ids["private"], by="bob", now=T),
                 lambda: store.delete_query(ids["private"], by="bob")):
        with pytest.raises(SavedQueryError, match="not found"):
            call()
    with pytest.raises(SavedQueryError, match="belongs to ana: fork it"):
        store.update_query(ids["team"], by="bob", now=T, name="mine")
    assert store.saved_query(ids["private"], reader="ana").name == "private variables"


def test_a_fork_is_a_private_copy_its_owner_can_edit(queries):
    store, ids = queries
    fork = store.fork_query(ids["team"], by="bob", now=T + timedelta(minutes=1))
    copy = store.saved_query(fork, reader="bob")
    assert (copy.owner, copy.visibility, copy.forked_from) == ("bob", "private", ids["team"])
    assert copy.spec == SPEC and copy.name == "team variables"
    edited = store.update_query(fork, by="bob", now=T + timedelta(minutes=2),
                                spec={**SPEC, "flux_min_jy": 0.1}, visibility="team")
    assert edited.spec["flux_min_jy"] == 0.1 and edited.updated_utc > edited.created_utc
    assert store.saved_query(ids["team"], reader="ana").spec == SPEC   # the original stays
    second = store.fork_query(ids["team"], by="bob", now=T)
    assert store.saved_query(second, reader="bob").name == "team variables (2)"


def test_names_are_unique_per_owner_and_page_only(store):
    store.save_query(owner="ana", page="sources", name="bright", spec={}, now=T)
    store.save_query(owner="bob", page="sources", name="bright", spec={}, now=T)
    store.save_query(owner="ana", page="images", name="bright", spec={}, now=T)
    with pytest.raises(SavedQueryError, match="already has a sources query named 'bright'"):
        store.save_query(owner="ana", page="sources", name="bright", spec={}, now=T)


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"page": "mosaics"}, "page 'mosaics'"),
    ({"name": " "}, "needs a name"),
    ({"visibility": "secret"}, "visibility 'secret'"),
    ({"spec": ["not", "a", "mapping"]}, "is a mapping"),
])
def test_bad_queries_are_refused_with_the_reason(store, kwargs, problem):
    args = {"owner": "ana", "page": "sources", "name": "q", "spec": {}, "now": T, **kwargs}
    with pytest.raises(SavedQueryError, match=problem):
        store.save_query(**args)


def test_queries_survive_a_reopen_and_deleting_removes_them(home):
    with Store.open(home) as store:
        qid = store.save_query(owner="ana", page="pipeline", name="failed today",
                               spec={"state": "failed"}, visibility="team", now=T)
    with Store.open(home) as store:
        assert store.saved_query(qid, reader="bob").spec == {"state": "failed"}
        store.delete_query(qid, by="ana")
        assert store.saved_query(qid, reader="ana") is None


def test_a_query_saved_before_owners_existed_is_kept_as_the_teams(home, tmp_path):
    import shutil

    from pipeline.store import MIGRATIONS_DIR
    older = tmp_path / "migrations-0008"
    older.mkdir()
    for sql in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(sql.name[:4]) <= 8:
            shutil.copy(sql, older / sql.name)
    with Store.open(home, migrations_dir=older) as store:
        store._cur.execute("INSERT INTO saved_queries (name, page, spec, created_utc) "
                           "VALUES ('legacy', 'sources', '{\"eta_min\": 2}', ?)", [T])
    with Store.open(home) as store:
        [row] = store.saved_queries(reader="bob").itertuples()
        assert (row.owner, row.visibility, row.name) == ("admin", "team", "legacy")
        assert store.saved_query(int(row.id), reader="bob").spec == {"eta_min": 2}
