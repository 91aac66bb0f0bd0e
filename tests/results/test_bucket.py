"""The store against a real S3-compatible server on loopback (moto's standalone server)."""

from __future__ import annotations

import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from results import STATUS_CACHE, load, read_statuses, resolve, sweep_dir, write_trial
from tests.results.rows import steps_of, summary

pytestmark = pytest.mark.integration

pytestmark = pytest.mark.integration


def _keys(uri: str) -> list[str]:
    fs, path = resolve(uri)
    bucket_name = path.split("/")[0]
    infos = fs.get_file_info(pafs.FileSelector(bucket_name, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def test_trials_round_trip_through_a_bucket_with_no_temporary_objects(bucket):
    write_trial(bucket, "sw", summary("a", final_test_loss=0.5), steps_of())
    write_trial(bucket, "sw", summary("b", "stopped", stopped_step=2), steps_of(2))
    write_trial(bucket, "sw", summary("a", final_test_loss=0.25), steps_of())  # rewrite
    bucket_name = bucket.split("/")[2]
    # Objects are written in place (no rename on S3): no hidden temporaries, ever.
    assert _keys(bucket) == [
        f"{bucket_name}/results/sw/steps/a.parquet",
        f"{bucket_name}/results/sw/steps/b.parquet",
        f"{bucket_name}/results/sw/trials/a.parquet",
        f"{bucket_name}/results/sw/trials/b.parquet",
    ]
    trials, steps = load(sweep_dir(bucket, "sw"))
    assert trials["trial_id"].tolist() == ["a", "b"]
    assert trials["final_test_loss"].tolist()[0] == 0.25
    assert trials["stopped_step"].tolist()[1] == 2
    assert len(steps) == 5
    assert read_statuses(bucket, "sw") == {"a": "completed", "b": "stopped"}
    # The results root holds the sweep too.
    assert load(bucket).trials["trial_id"].tolist() == ["a", "b"]


def test_truncated_object_in_a_bucket_is_reported_and_skipped(bucket):
    for name in ("a", "b", "c"):
        write_trial(bucket, "sw", summary(name), steps_of())
    fs, path = resolve(sweep_dir(bucket, "sw"))
    target = f"{path}/trials/b.parquet"
    with fs.open_input_stream(target) as f:
        good = f.read()
    with fs.open_output_stream(target) as f:
        f.write(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="b.parquet"):
        loaded = load(sweep_dir(bucket, "sw"))
    assert loaded.trials["trial_id"].tolist() == ["a", "c"]
    assert len(loaded.steps) == 9
    assert [p.rsplit("/", 1)[-1] for p, _ in loaded.unreadable] == ["b.parquet"]
    unreadable: list[tuple[str, str]] = []
    assert read_statuses(bucket, "sw", unreadable=unreadable) == {
        "a": "completed",
        "c": "completed",
    }
    assert len(unreadable) == 1 and unreadable[0][0].endswith("trials/b.parquet")


def test_load_of_an_empty_bucket_prefix_raises(bucket):
    with pytest.raises(FileNotFoundError):
        load(sweep_dir(bucket, "nothing-here"))


def test_status_cache_in_a_bucket_keeps_settled_statuses_and_sees_rewrites(bucket):
    write_trial(bucket, "sw", summary("a"), steps_of())
    write_trial(bucket, "sw", summary("b", "stopped", stopped_step=2), steps_of(2))
    time.sleep(2.2)  # S3 times have 1 s steps: a and b settle 2 s before the newest, c
    write_trial(bucket, "sw", summary("c"), steps_of())
    expected = {"a": "completed", "b": "stopped", "c": "completed"}
    assert read_statuses(bucket, "sw", update_cache=True) == expected
    bucket_name = bucket.split("/")[2]
    assert f"{bucket_name}/results/sw/{STATUS_CACHE}" in _keys(bucket)
    fs, path = resolve(sweep_dir(bucket, "sw"))
    with fs.open_input_file(f"{path}/{STATUS_CACHE}") as f:
        assert sorted(pq.read_table(f)["trial_id"].to_pylist()) == ["a", "b"]
    assert read_statuses(bucket, "sw") == expected
    write_trial(bucket, "sw", summary("a", "error", error="rerun failed"), steps_of())
    assert read_statuses(bucket, "sw") == {**expected, "a": "error"}
