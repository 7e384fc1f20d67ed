"""What people say about one image or source: threaded comments, tags and QA ratings.

Comments are Markdown rendered here with raw HTML escaped (Panel's Markdown pane passes
HTML through, so a ``<script>`` or an ``onerror`` in a comment would run in every reader's
browser); links may not use ``javascript:``. A signed-out visitor (``actor.reader`` is
None) sees everything and writes nothing; the store refuses their writes as well.

In a notebook: ``AnnotationsPanel(store=Store.open(home), kind="image", target_id=3)``.
"""

from __future__ import annotations

import html
from functools import cache

import pandas as pd
import panel as pn
import param
from markdown_it import MarkdownIt

from pipeline.actor import Actor
from pipeline.errors import ContimgError
from pipeline.store import Store
from pipeline.store.annotations import RATINGS, TARGET_KINDS, thread_order
from views.base import on_event

_NEW = "New comment"
_CSS = """
.comment {border-left: 3px solid #dee2e6; padding: 2px 8px; margin: 4px 0;}
.comment .who {font-size: 0.8em; color: #6c757d;}
.comment-body p {margin: 2px 0;}
.tag {display: inline-block; background: #e7f1f8; border-radius: 10px; padding: 1px 8px;
  margin: 1px 3px; font-size: 0.85em;}
"""


@cache
def _markdown() -> MarkdownIt:
    # commonmark with html off: raw HTML in the text is shown as text, never as markup
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def comment_html(body: str) -> str:
    """A comment's Markdown as HTML, its raw HTML escaped (safe to put in a page)."""
    return _markdown().render(str(body))


def thread_html(comments: pd.DataFrame) -> str:
    """The comment threads as nested blocks, replies indented under their parent."""
    if comments.empty:
        return '<div class="no-comments">No comments yet.</div>'
    parts = []
    for depth, row in thread_order(comments):
        edited = "" if pd.isna(row["edited_utc"]) else " · edited"
        when = pd.Timestamp(row["created_utc"]).strftime("%Y-%m-%d %H:%M")
        parts.append(
            f'<div class="comment" data-comment-id="{int(row["id"])}" '
            f'style="margin-left: {min(depth, 6) * 20}px">'
            f'<div class="who">#{int(row["id"])} · <b>{html.escape(str(row["author"]))}</b>'
            f" · {when} UTC{edited}</div>"
            f'<div class="comment-body">{comment_html(row["body"])}</div></div>')
    return "".join(parts)


def tags_html(tags: list[str]) -> str:
    """Tags as little labels."""
    if not tags:
        return '<span class="no-tags">No tags.</span>'
    return "".join(f'<span class="tag">{html.escape(t)}</span>' for t in tags)


def pipeline_qa_text(record: dict | None) -> str:
    """The pipeline's own QA verdict of an image record ('' for other targets)."""
    if not record or "qa_passed" not in record:
        return ""
    verdict = record.get("qa_passed")
    if verdict is None or (isinstance(verdict, float) and pd.isna(verdict)):
        return "Pipeline QA: not judged"
    if bool(verdict):
        return "Pipeline QA: passed"
    return f"Pipeline QA: failed ({record.get('qa_reason') or 'no reason given'})"


class AnnotationsPanel(pn.viewable.Viewer):
    """Comments, tags and QA ratings of one image or source, with the users' consensus."""

    store = param.ClassSelector(class_=Store, doc="Where annotations are kept.")
    actor = param.ClassSelector(class_=Actor, doc="Who reads (and perhaps writes).")
    kind = param.Selector(objects=list(TARGET_KINDS), default="image", doc="Target kind.")
    target_id = param.Integer(default=None, allow_None=True, doc="The image or source id.")
    changed = param.Integer(default=0, doc="Counts this panel's writes (a page watches it to "
                            "refresh its tag filter).")

    def __init__(self, **params):
        params.setdefault("actor", Actor.notebook())
        super().__init__(**params)
        self._layout: pn.Column | None = None

    @property
    def _writer(self) -> str | None:
        return self.actor.reader

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is not None:
            return self._layout
        self._title = pn.pane.Markdown(css_classes=["annotations-title"])
        self._qa = pn.pane.HTML(css_classes=["annotations-qa"], sizing_mode="stretch_width")
        self._tags = pn.pane.HTML(css_classes=["annotations-tags"], sizing_mode="stretch_width")
        self._thread = pn.pane.HTML(css_classes=["annotations-thread"], stylesheets=[_CSS],
                                    sizing_mode="stretch_width")
        self._message = pn.pane.HTML("", css_classes=["annotations-message"])
        self._rating = pn.widgets.RadioButtonGroup(options=list(RATINGS), value=None,
                                                   css_classes=["rating-choice"])
        self._rating_note = pn.widgets.TextInput(placeholder="note (why)", width=220,
                                                 css_classes=["rating-note"])
        rate = pn.widgets.Button(label="Rate", color="primary", css_classes=["rate"])
        self._tag_input = pn.widgets.TextInput(placeholder="tag", width=160,
                                               css_classes=["tag-input"])
        add_tag = pn.widgets.Button(label="Add tag", css_classes=["add-tag"])
        self._tag_remove = pn.widgets.Select(options=[], width=160, css_classes=["tag-remove"])
        remove_tag = pn.widgets.Button(label="Remove tag", css_classes=["remove-tag"])
        self._mode = pn.widgets.Select(options=[_NEW], value=_NEW, width=260,
                                       css_classes=["comment-mode"])
        self._body = pn.widgets.TextAreaInput(placeholder="Markdown", height=90,
                                              sizing_mode="stretch_width",
                                              css_classes=["comment-body-input"])
        post = pn.widgets.Button(label="Post", color="primary", css_classes=["post"])
        rate.on_click(on_event(self._on_rate))
        add_tag.on_click(on_event(self._on_add_tag))
        remove_tag.on_click(on_event(self._on_remove_tag))
        post.on_click(on_event(self._on_post))
        self._mode.param.watch(on_event(self._on_mode), "value")
        self._writers = pn.Column(
            pn.Row(self._rating, self._rating_note, rate),
            pn.Row(self._tag_input, add_tag, self._tag_remove, remove_tag),
            pn.Row(self._mode, sizing_mode="stretch_width"), self._body, post,
            visible=False, sizing_mode="stretch_width", css_classes=["annotations-write"])
        self._readonly = pn.pane.Markdown(
            "Sign in to comment, tag or rate.", visible=False,
            css_classes=["annotations-readonly"])
        self.param.watch(on_event(lambda *_: self.refresh()), ["target_id", "kind", "actor"])
        self._layout = pn.Column(
            self._title, self._qa, self._tags, self._thread, self._writers, self._readonly,
            self._message, sizing_mode="stretch_width", css_classes=["annotations-panel"])
        self.refresh()
        return self._layout

    def refresh(self) -> None:
        """Re-read the target's comments, tags and ratings."""
        if self._layout is None:
            return
        if self.target_id is None:
            self._title.object = "#### Comments, tags and ratings"
            for pane in (self._qa, self._tags, self._thread):
                pane.object = ""
            self._writers.visible = self._readonly.visible = False
            return
        kind, tid = self.kind, int(self.target_id)
        self._title.object = f"#### Comments, tags and ratings — {kind} {tid}"
        self._qa.object = self._qa_html(kind, tid)
        tags = self.store.tags(kind, tid)
        self._tags.object = "Tags: " + tags_html(tags)
        comments = self.store.comments(kind, tid)
        self._thread.object = thread_html(comments)
        writable = self._writer is not None
        self._writers.visible, self._readonly.visible = writable, not writable
        if not writable:
            return
        self._tag_remove.options = tags
        mine = self.store.rating_of(kind, tid, by=self._writer)
        self._rating.value, self._rating_note.value = mine if mine else (None, "")
        modes = [_NEW]
        for row in comments.itertuples(index=False):
            modes.append(f"Reply to #{int(row.id)} ({row.author})")
            if row.author == self._writer:
                modes.append(f"Edit my #{int(row.id)}")
        self._mode.options = modes
        if self._mode.value not in modes:
            self._mode.value = _NEW

    def _qa_html(self, kind: str, tid: int) -> str:
        c = self.store.consensus(kind, tid)
        pipeline = pipeline_qa_text(self.store.image(tid)) if kind == "image" else ""
        consensus = c.consensus or "no ratings yet"
        return (f'<div class="qa-line">{html.escape(pipeline)}'
                f'{" · " if pipeline else ""}Users\' QA: '
                f'<b class="qa-consensus" data-consensus="{c.consensus or ""}">'
                f"{html.escape(consensus)}</b> ({c.good} good · {c.uncertain} uncertain · "
                f"{c.bad} bad)</div>")

    def _act(self, write) -> None:
        """Run a write as the actor; a refusal shows as a message, not a traceback."""
        if self.target_id is None:
            return
        try:
            write()
        except ContimgError as exc:
            self._message.object = (f'<div class="annotation-error" style="color:#b02a37">'
                                    f"{html.escape(str(exc))}</div>")
            return
        self._message.object = ""
        self.refresh()
        self.changed += 1

    def _on_rate(self, _event=None) -> None:
        self._act(lambda: self.store.rate(self.kind, self.target_id, self._rating.value or "",
                                          by=self._writer, note=self._rating_note.value))

    def _on_add_tag(self, _event=None) -> None:
        def add() -> None:
            self.store.add_tag(self.kind, self.target_id, self._tag_input.value,
                               by=self._writer)
            self._tag_input.value = ""
        self._act(add)

    def _on_remove_tag(self, _event=None) -> None:
        if self._tag_remove.value:
            self._act(lambda: self.store.remove_tag(self.kind, self.target_id,
                                                    self._tag_remove.value, by=self._writer))

    def _on_mode(self, event) -> None:
        # Editing starts from the comment's current text.
        if str(event.new).startswith("Edit my #"):
            cid = int(event.new.removeprefix("Edit my #"))
            rows = self.store.comments(self.kind, self.target_id)
            match = rows[rows["id"] == cid]
            if not match.empty:
                self._body.value = str(match.iloc[0]["body"])

    def _on_post(self, _event=None) -> None:
        mode, body = self._mode.value, self._body.value_input or self._body.value

        def post() -> None:
            if mode.startswith("Edit my #"):
                self.store.edit_comment(int(mode.removeprefix("Edit my #")), by=self._writer,
                                        body=body)
            else:
                parent = (int(mode.removeprefix("Reply to #").split(" ")[0])
                          if mode.startswith("Reply to #") else None)
                self.store.add_comment(self.kind, self.target_id, by=self._writer, body=body,
                                       parent_id=parent)
            self._body.value = ""
            self._mode.value = _NEW
        self._act(post)
