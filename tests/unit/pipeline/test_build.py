"""The pure parts of a build's record."""

from __future__ import annotations

from pipeline.record import _build_id


def test_a_run_that_builds_again_gets_a_new_build_id_and_a_retried_record_finds_its_row():
    first = {"build_id": "build-x-2013Q1", "status": "SUCCEEDED", "tables_written": {"gold.training_set": 3}}
    assert _build_id([], "build-x-2013Q1", "SUCCEEDED", {"gold.training_set": 3}) == "build-x-2013Q1"
    assert _build_id([first], "build-x-2013Q1", "SUCCEEDED", {"gold.training_set": 3}) is first
    assert _build_id([first], "build-x-2013Q1", "SUCCEEDED", {"gold.training_set": 7}) == "build-x-2013Q1-r2"
    failed = {"build_id": "build-x-2013Q1-r2", "status": "FAILED", "tables_written": {}}
    assert _build_id([first, failed], "build-x-2013Q1", "SUCCEEDED", {"gold.training_set": 9}) == "build-x-2013Q1-r3"
    assert _build_id([first, failed], "build-y-2013Q1", "FAILED", {}) == "build-y-2013Q1"
