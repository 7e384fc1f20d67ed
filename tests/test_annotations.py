"""Comments, tags and QA ratings on a real store: threads, author-only edits, tag filters,
one rating per user with a consensus, and the columns exports carry."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from conftest import T0

from pipeline.store import Store
from pipeline.store.annotations import AnnotationError, consensus_of, normalise_tag, thread_order
from pipeline.store.images import ImageFilter
from pipeline.store.sources import FilterSpec


@pytest.fixture
def targets(store: Store) -> dict[str, list[int]]:
    """Three images and three catalog sources."""
    images = [store.add_image(observation_id=f"obs{k}", path=f"/nowhere/{k}.fits",
                              mid_mjd=61000.0 + k, now=T0) for k in range(3)]
    store.add_catalog_sources(pd.DataFrame({
        "name": ["J0001+A", "J0002+B", "J0003+C"], "ra_deg": [1.0, 2.0, 3.0],
        "dec_deg": [10.0, 10.0, 10.0], "flux_jy": [1.0, 0.5, 0.2],
        "spectral_index": [-0.7] * 3}), now=T0)
    sources = [int(i) for i in store.export_sources(FilterSpec(sort_by="name",
                                                                descending=False))["id"]]
    return {"image": images, "source": sources}


def test_threaded_comments_and_author_only_edits(store, targets):
    img = targets["image"][0]
    first = store.add_comment("image", img, by="vera", body="sidelobes *here*", now=T0)
    reply = store.add_comment("image", img, by="val", body="agreed", parent_id=first,
                              now=T0 + timedelta(minutes=1))
    second = store.add_comment("image", img, by="otto", body="new thread",
                               now=T0 + timedelta(minutes=2))
    store.add_comment("image", img, by="vera", body="reply to reply", parent_id=reply,
                      now=T0 + timedelta(minutes=3))
    order = [(d, r["body"]) for d, r in thread_order(store.comments("image", img))]
    assert order == [(0, "sidelobes *here*"), (1, "agreed"), (2, "reply to reply"),
                     (0, "new thread")]
    store.edit_comment(first, by="vera", body="sidelobes, fixed", now=T0 + timedelta(hours=1))
    row = store.comments("image", img).set_index("id").loc[first]
    assert row["body"] == "sidelobes, fixed" and not pd.isna(row["edited_utc"])
    with pytest.raises(AnnotationError, match=f"comment {second} is otto's; only its author"):
        store.edit_comment(second, by="vera", body="hijack")
    assert store.comments("image", targets["image"][1]).empty


@pytest.mark.parametrize("call, match", [
    (lambda s, t: s.add_comment("image", t["image"][0], by=None, body="x"), "signed-out"),
    (lambda s, t: s.add_comment("image", 999, by="vera", body="x"), "image 999 does not exist"),
    (lambda s, t: s.add_comment("mosaic", 1, by="vera", body="x"), "target kind 'mosaic'"),
    (lambda s, t: s.add_comment("image", t["image"][0], by="vera", body="  "), "needs some text"),
    (lambda s, t: s.add_comment("image", t["image"][0], by="vera", body="x", parent_id=77),
     "comment 77 does not exist"),
    (lambda s, t: s.edit_comment(55, by="vera", body="x"), "comment 55 does not exist"),
    (lambda s, t: s.add_tag("source", t["source"][0], "a,b", by="vera"), "commas"),
    (lambda s, t: s.add_tag("source", t["source"][0], "   ", by="vera"), "at least one"),
    (lambda s, t: s.add_tag("source", t["source"][0], "x" * 41, by="vera"), "at most 40"),
    (lambda s, t: s.rate("image", t["image"][0], "meh", by="vera"), "rating 'meh'"),
    (lambda s, t: s.rate("image", t["image"][0], "good", by=None), "signed-out"),
])
def test_errors_name_the_problem(store, targets, call, match):
    with pytest.raises(AnnotationError, match=match):
        call(store, targets)


def test_reply_must_be_on_the_same_target(store, targets):
    a, b = targets["image"][:2]
    parent = store.add_comment("image", a, by="vera", body="x")
    with pytest.raises(AnnotationError, match=f"about image {a}, not image {b}"):
        store.add_comment("image", b, by="val", body="y", parent_id=parent)


def test_tags_normalised_counted_and_filter_in_sql(store, targets):
    s1, s2, s3 = targets["source"]
    assert store.add_tag("source", s1, "  Extended  Emission ", by="vera") == "extended-emission"
    store.add_tag("source", s1, "EXTENDED emission", by="val")  # the same tag: kept once
    store.add_tag("source", s2, "extended-emission", by="vera")
    store.add_tag("source", s2, "artefact", by="vera")
    store.add_tag("image", targets["image"][0], "artefact", by="vera")
    assert store.tags("source", s1) == ["extended-emission"]
    assert store.tags("source", s2) == ["artefact", "extended-emission"]
    counts = store.tag_counts("source")
    assert list(zip(counts["tag"], counts["n"], strict=True)) == [
        ("extended-emission", 2), ("artefact", 1)]
    assert dict(zip(*store.tag_counts().values.T, strict=True))["artefact"] == 2
    got = store.export_sources(FilterSpec(tag="Extended Emission"))
    assert sorted(got["id"]) == [s1, s2]
    assert store.count_sources(FilterSpec(tag="artefact")) == 1
    assert store.count_images(ImageFilter(tag="artefact")) == 1
    assert list(store.images(ImageFilter(tag="artefact"))["id"]) == [targets["image"][0]]
    assert store.remove_tag("source", s2, "ARTEFACT", by="vera") is True
    assert store.remove_tag("source", s2, "artefact", by="vera") is False
    assert store.count_sources(FilterSpec(tag="artefact")) == 0
    assert store.count_sources(FilterSpec(tag="")) == 3  # no tag: no filter


@pytest.mark.parametrize("counts, expected", [
    ({}, None), ({"good": 1}, "good"), ({"good": 2, "bad": 1}, "good"),
    ({"good": 1, "bad": 1}, "uncertain"), ({"bad": 2, "good": 2, "uncertain": 1}, "uncertain"),
    ({"bad": 3, "uncertain": 1}, "bad"), ({"uncertain": 1}, "uncertain")])
def test_consensus_is_majority_and_a_tie_is_uncertain(counts, expected):
    assert consensus_of(counts) == expected


def test_one_rating_per_user_rerating_replaces(store, targets):
    img = targets["image"][0]
    store.rate("image", img, "bad", by="vera", note="stripes", now=T0)
    store.rate("image", img, "good", by="val", now=T0)
    assert store.consensus("image", img).consensus == "uncertain"
    store.rate("image", img, "good", by="vera", note="reprocessed, fine",
               now=T0 + timedelta(hours=1))
    c = store.consensus("image", img)
    assert (c.good, c.uncertain, c.bad, c.consensus) == (2, 0, 0, "good")
    assert len(store.ratings("image", img)) == 2
    assert store.rating_of("image", img, by="vera") == ("good", "reprocessed, fine")
    assert store.rating_of("image", img, by=None) is None
    assert store.consensus("image", targets["image"][1]).consensus is None


def test_exports_carry_tags_and_the_consensus(store, targets):
    s1, s2, s3 = targets["source"]
    store.add_tag("source", s1, "b-tag", by="vera")
    store.add_tag("source", s1, "a-tag", by="vera")
    for who, rating in (("vera", "bad"), ("val", "bad"), ("otto", "good")):
        store.rate("source", s1, rating, by=who)
    store.rate("source", s2, "good", by="vera")
    store.rate("source", s2, "bad", by="val")
    frame = store.export_sources(FilterSpec(sort_by="name", descending=False)).set_index("id")
    assert frame.loc[s1, "tags"] == "a-tag,b-tag"
    assert frame.loc[s1, "qa_consensus"] == "bad"
    assert frame.loc[s2, "qa_consensus"] == "uncertain"
    assert frame.loc[s3, "tags"] == "" and pd.isna(frame.loc[s3, "qa_consensus"])
    # The SQL consensus agrees with the store's per-target one.
    for sid in (s1, s2, s3):
        want = store.consensus("source", sid).consensus
        got = frame.loc[sid, "qa_consensus"]
        assert (None if pd.isna(got) else got) == want
    img = targets["image"][0]
    store.add_tag("image", img, "rfi", by="vera")
    store.rate("image", img, "uncertain", by="vera")
    exported = store.export_images(ImageFilter()).set_index("id")
    assert exported.loc[img, "tags"] == "rfi" and exported.loc[img, "qa_consensus"] == "uncertain"


def test_annotations_survive_reopening(home, targets, store):
    img = targets["image"][0]
    store.add_comment("image", img, by="vera", body="kept")
    store.rate("image", img, "bad", by="vera")
    store.close()
    with Store.open(home) as again:
        assert list(again.comments("image", img)["body"]) == ["kept"]
        assert again.consensus("image", img).consensus == "bad"


def test_normalise_tag():
    assert normalise_tag("\tQuasar\n candidate ") == "quasar-candidate"


def test_votable_and_csv_exports_carry_the_columns(store, targets, tmp_path):
    from astropy.io.votable import parse_single_table

    from pipeline.exports import csv_bytes, write_votable
    s1 = targets["source"][0]
    store.add_tag("source", s1, "grb-host", by="vera")
    store.rate("source", s1, "good", by="vera")
    spec = FilterSpec(sort_by="name", descending=False)
    write_votable(store.iter_sources(spec), tmp_path / "s.vot")
    table = parse_single_table(str(tmp_path / "s.vot")).to_table()
    row = table[list(table["id"]).index(s1)]
    assert row["tags"] == "grb-host" and row["qa_consensus"] == "good"
    header, first = csv_bytes(store.iter_sources(spec)).decode().splitlines()[:2]
    assert header.split(",")[-2:] == ["tags", "qa_consensus"]
    assert first.endswith("grb-host,good")


def test_a_tag_filter_that_cannot_match_is_refused_up_front():
    from pipeline.store.sources import InvalidFilter
    with pytest.raises(InvalidFilter, match="commas"):
        FilterSpec(tag="a,b")
