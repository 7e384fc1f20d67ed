"""What people say about an image or a source: threaded comments, tags and QA ratings.

A target is a kind ('image' or 'source') and its id. Comments are Markdown kept as typed
(the view renders them with raw HTML escaped) and are edited by their author only. Tags are
free text, normalised (lower case, inner spaces as '-', no commas, since exports join them
with commas). A rating is good / uncertain / bad with a note, one per user per target;
rating again replaces it.

The consensus of a target's ratings is the rating most users gave; a tie between the most
given (one good and one bad, or 2 good, 2 bad, 1 uncertain) is 'uncertain', since the
people who looked disagree; a target nobody rated has none (None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from pipeline.errors import ContimgError

TARGET_KINDS = ("image", "source")
RATINGS = ("good", "uncertain", "bad")
MAX_TAG_CHARS = 40
MAX_COMMENT_CHARS = 10_000
_TABLE = {"image": "images", "source": "sources"}
_SPACES = re.compile(r"\s+")


class AnnotationError(ContimgError):
    """A comment, tag or rating that cannot be made or changed as asked; says which and why."""


@dataclass(frozen=True, kw_only=True)
class Consensus:
    """The users' ratings of one target: counts per rating and the consensus (None: unrated)."""

    good: int
    uncertain: int
    bad: int
    consensus: str | None


def normalise_tag(text: str) -> str:
    """A tag as stored: trimmed, lower case, inner whitespace as one '-'; refuses bad tags."""
    tag = _SPACES.sub("-", str(text).strip().lower())
    if not tag:
        raise AnnotationError("a tag needs at least one character that is not a space")
    if "," in tag:
        raise AnnotationError(f"tag {text!r}: commas separate tags in exports; "
                              "use '-' or two tags")
    if len(tag) > MAX_TAG_CHARS:
        raise AnnotationError(f"tag {tag[:MAX_TAG_CHARS]}…: at most {MAX_TAG_CHARS} "
                              f"characters, got {len(tag)}")
    if any(not ch.isprintable() for ch in tag):
        raise AnnotationError(f"tag {tag!r} holds a control character")
    return tag


def consensus_of(counts: dict[str, int]) -> str | None:
    """The consensus of rating counts: the most given; a tie at the top is 'uncertain'."""
    best = max(counts.values(), default=0)
    if best == 0:
        return None
    top = [r for r in RATINGS if counts.get(r, 0) == best]
    return top[0] if len(top) == 1 else "uncertain"


#: Per target: its tags comma-joined (sorted) and the consensus rating, for joins.
#: ``{kind}`` is filled with a TARGET_KINDS value (checked, never user text).
_TAGS_BY_TARGET = ("SELECT target_id, string_agg(tag, ',' ORDER BY tag) AS tags FROM tags "
                   "WHERE target_kind = '{kind}' GROUP BY target_id")
_CONSENSUS_BY_TARGET = (
    "SELECT target_id, CASE WHEN count(*) FILTER (WHERE n = top) > 1 THEN 'uncertain' "
    "ELSE arg_max(rating, n) END AS qa_consensus FROM ("
    "SELECT target_id, rating, n, max(n) OVER (PARTITION BY target_id) AS top FROM ("
    "SELECT target_id, rating, count(*) AS n FROM qa_ratings WHERE target_kind = '{kind}' "
    "GROUP BY target_id, rating)) GROUP BY target_id")


def annotation_join_sql(kind: str, id_column: str) -> tuple[str, str]:
    """(select columns, LEFT JOINs) adding ``tags`` and ``qa_consensus`` to a query.

    ``id_column`` is the SQL expression of the target's id in the outer query (``s.id``).
    """
    _check_kind(kind)
    select = "coalesce(_ann_t.tags, '') AS tags, _ann_q.qa_consensus"
    joins = (f"LEFT JOIN ({_TAGS_BY_TARGET.format(kind=kind)}) _ann_t "
             f"ON _ann_t.target_id = {id_column} "
             f"LEFT JOIN ({_CONSENSUS_BY_TARGET.format(kind=kind)}) _ann_q "
             f"ON _ann_q.target_id = {id_column}")
    return select, joins


def tag_condition_sql(kind: str, id_column: str) -> str:
    """A WHERE condition (one ``?``: the normalised tag) that the target carries a tag."""
    _check_kind(kind)
    return (f"EXISTS (SELECT 1 FROM tags WHERE target_kind = '{kind}' "
            f"AND target_id = {id_column} AND tag = ?)")


def _check_kind(kind: str) -> None:
    if kind not in TARGET_KINDS:
        raise AnnotationError(f"target kind {kind!r}: one of {', '.join(TARGET_KINDS)}")


def _writer(by: str | None, what: str) -> str:
    if not by:
        raise AnnotationError(f"a signed-out visitor may read but not {what}; sign in first")
    return by


def _now(now: datetime | None) -> datetime:
    # The store keeps naive UTC timestamps.
    return (now or datetime.now(UTC)).replace(tzinfo=None)


def thread_order(comments: pd.DataFrame) -> list[tuple[int, dict]]:
    """Comments as (depth, row) in reading order: each reply under its parent, by time."""
    rows = comments.to_dict("records")
    known = {r["id"] for r in rows}
    children: dict[object, list[dict]] = {}
    for r in rows:
        parent = r["parent_id"]
        key = None if pd.isna(parent) or int(parent) not in known else int(parent)
        children.setdefault(key, []).append(r)
    out: list[tuple[int, dict]] = []
    stack = [(0, r) for r in reversed(children.get(None, []))]
    while stack:
        depth, row = stack.pop()
        out.append((depth, row))
        stack.extend((depth + 1, c) for c in reversed(children.get(int(row["id"]), [])))
    return out


class AnnotationQueries:
    """Mixin of Store: comments, tags and QA ratings of images and sources (migration 0010)."""

    def _check_target(self, kind: str, target_id: int) -> int:
        _check_kind(kind)
        found = self._cur.execute(  # type: ignore[attr-defined]
            f"SELECT 1 FROM {_TABLE[kind]} WHERE id = ?", [int(target_id)]).fetchone()
        if found is None:
            raise AnnotationError(f"{kind} {int(target_id)} does not exist")
        return int(target_id)

    # ------------------------------------------------------------------ comments
    def add_comment(self, kind: str, target_id: int, *, by: str | None, body: str,
                    parent_id: int | None = None, now: datetime | None = None) -> int:
        """Post a comment (a reply when ``parent_id`` is given); returns its id."""
        author = _writer(by, "comment")
        target = self._check_target(kind, target_id)
        text = _check_body(body)
        if parent_id is not None:
            parent = self._cur.execute(  # type: ignore[attr-defined]
                "SELECT target_kind, target_id FROM comments WHERE id = ?",
                [int(parent_id)]).fetchone()
            if parent is None:
                raise AnnotationError(f"comment {int(parent_id)} does not exist; "
                                      "cannot reply to it")
            if parent != (kind, target):
                raise AnnotationError(f"comment {int(parent_id)} is about {parent[0]} "
                                      f"{parent[1]}, not {kind} {target}; reply there")
        return self._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO comments (target_kind, target_id, author, body, parent_id, "
            "created_utc) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            [kind, target, author, text, parent_id, _now(now)]).fetchone()[0]

    def edit_comment(self, comment_id: int, *, by: str | None, body: str,
                     now: datetime | None = None) -> None:
        """Replace the body of one's own comment."""
        editor = _writer(by, "edit comments")
        text = _check_body(body)
        row = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT author FROM comments WHERE id = ?", [int(comment_id)]).fetchone()
        if row is None:
            raise AnnotationError(f"comment {int(comment_id)} does not exist")
        if row[0] != editor:
            raise AnnotationError(f"comment {int(comment_id)} is {row[0]}'s; only its author "
                                  "may edit it")
        self._cur.execute(  # type: ignore[attr-defined]
            "UPDATE comments SET body = ?, edited_utc = ? WHERE id = ?",
            [text, _now(now), int(comment_id)])

    def comments(self, kind: str, target_id: int) -> pd.DataFrame:
        """A target's comments by time: id, author, body, parent_id, created_utc, edited_utc."""
        _check_kind(kind)
        return self._df(  # type: ignore[attr-defined]
            "SELECT id, author, body, parent_id, created_utc, edited_utc FROM comments "
            "WHERE target_kind = ? AND target_id = ? ORDER BY created_utc, id",
            [kind, int(target_id)])

    # ---------------------------------------------------------------------- tags
    def add_tag(self, kind: str, target_id: int, tag: str, *, by: str | None,
                now: datetime | None = None) -> str:
        """Tag a target (a tag it has already is kept as it was); returns the stored tag."""
        who = _writer(by, "tag")
        target = self._check_target(kind, target_id)
        norm = normalise_tag(tag)
        self._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO tags (target_kind, target_id, tag, added_by, added_utc) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [kind, target, norm, who, _now(now)])
        return norm

    def remove_tag(self, kind: str, target_id: int, tag: str, *, by: str | None) -> bool:
        """Take a tag off a target; returns whether it had it."""
        _writer(by, "remove tags")
        _check_kind(kind)
        norm = normalise_tag(tag)
        gone = self._cur.execute(  # type: ignore[attr-defined]
            "DELETE FROM tags WHERE target_kind = ? AND target_id = ? AND tag = ? "
            "RETURNING tag", [kind, int(target_id), norm]).fetchall()
        return bool(gone)

    def tags(self, kind: str, target_id: int) -> list[str]:
        """A target's tags, sorted."""
        _check_kind(kind)
        return [r[0] for r in self._cur.execute(  # type: ignore[attr-defined]
            "SELECT tag FROM tags WHERE target_kind = ? AND target_id = ? ORDER BY tag",
            [kind, int(target_id)]).fetchall()]

    def tag_counts(self, kind: str | None = None) -> pd.DataFrame:
        """Every tag with how many targets carry it (of one kind, or all): tag, n; most first."""
        if kind is not None:
            _check_kind(kind)
        return self._df(  # type: ignore[attr-defined]
            "SELECT tag, count(*) AS n FROM tags WHERE ? IS NULL OR target_kind = ? "
            "GROUP BY tag ORDER BY n DESC, tag", [kind, kind])

    # ------------------------------------------------------------------- ratings
    def rate(self, kind: str, target_id: int, rating: str, *, by: str | None,
             note: str = "", now: datetime | None = None) -> None:
        """Set one's rating of a target (replacing one's earlier rating)."""
        who = _writer(by, "rate")
        target = self._check_target(kind, target_id)
        if rating not in RATINGS:
            raise AnnotationError(f"rating {rating!r}: one of {', '.join(RATINGS)}")
        self._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO qa_ratings (target_kind, target_id, username, rating, note, rated_utc) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (target_kind, target_id, username) "
            "DO UPDATE SET rating = excluded.rating, note = excluded.note, "
            "rated_utc = excluded.rated_utc",
            [kind, target, who, rating, str(note), _now(now)])

    def ratings(self, kind: str, target_id: int) -> pd.DataFrame:
        """A target's ratings: username, rating, note, rated_utc; newest first."""
        _check_kind(kind)
        return self._df(  # type: ignore[attr-defined]
            "SELECT username, rating, note, rated_utc FROM qa_ratings "
            "WHERE target_kind = ? AND target_id = ? ORDER BY rated_utc DESC, username",
            [kind, int(target_id)])

    def rating_of(self, kind: str, target_id: int, *, by: str | None) -> tuple[str, str] | None:
        """(rating, note) that ``by`` gave a target, or None."""
        _check_kind(kind)
        if not by:
            return None
        row = self._cur.execute(  # type: ignore[attr-defined]
            "SELECT rating, note FROM qa_ratings WHERE target_kind = ? AND target_id = ? "
            "AND username = ?", [kind, int(target_id), by]).fetchone()
        return None if row is None else (row[0], row[1])

    def consensus(self, kind: str, target_id: int) -> Consensus:
        """Counts of each rating of a target and their consensus (see the module's doc)."""
        _check_kind(kind)
        counts = dict(self._cur.execute(  # type: ignore[attr-defined]
            "SELECT rating, count(*) FROM qa_ratings WHERE target_kind = ? AND target_id = ? "
            "GROUP BY rating", [kind, int(target_id)]).fetchall())
        return Consensus(good=counts.get("good", 0), uncertain=counts.get("uncertain", 0),
                         bad=counts.get("bad", 0), consensus=consensus_of(counts))


def _check_body(body: str) -> str:
    text = str(body).strip()
    if not text:
        raise AnnotationError("a comment needs some text")
    if len(text) > MAX_COMMENT_CHARS:
        raise AnnotationError(f"a comment holds at most {MAX_COMMENT_CHARS} characters, "
                              f"got {len(text)}")
    return text
