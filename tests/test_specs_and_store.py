import multiprocessing as mp

import numpy as np
import pytest

from ovlift.cache_schema import ArraySpec, GroupMeta, GroupSpec, SchemaError, Store, StoreFormatError

SPEC = GroupSpec(
    stage="demo",
    doc="test group",
    arrays=(
        ArraySpec("points", "float32", ("N", 3), (4, None), "xyz"),
        ArraySpec("labels", "int16", ("N",), (4,), "class"),
        ArraySpec("extra", "uint8", ("N",), (None,), "optional", required=False),
    ),
    info={"note": "a note"},
)


def meta(fp="f1"):
    return GroupMeta("demo", "impl", "1", {"a": 1}, {"scenes/s/input": "up"}, fp, {})


def write(store, path, n=10, fp="f1", value=1.0):
    with store.writer(path, SPEC, meta(fp), "scene 's'") as out:
        out.write("points", np.full((n, 3), value, np.float32))
        out.write("labels", np.arange(n, dtype=np.int16))


def test_published_group_reads_back_with_attrs(tmp_path):
    store = Store(tmp_path / "s.zarr")
    write(store, "scenes/s/demo")
    group = store.read("scenes/s/demo", fingerprint="f1")
    assert group is not None
    assert group.attrs["complete"] is True and group.attrs["stage"] == "demo"
    assert group.attrs["input_fingerprints"] == {"scenes/s/input": "up"}
    assert group.dims == {"N": 10}
    assert group.array("points").chunks == (4, 3)
    np.testing.assert_array_equal(group.load("labels"), np.arange(10))
    assert store.read("scenes/s/demo", fingerprint="other") is None
    assert store.leftovers() == []


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("points", np.zeros((10, 3), np.float64), "expected dtype float32, found float64"),
        ("points", np.zeros((10, 4), np.float32), "expected shape (N, 3), found (10, 4)"),
        ("labels", np.zeros(9, np.int16), "has N=9 on axis 0, but another array of the group has N=10"),
        ("nonsense", np.zeros(10, np.int16), "declares no array 'nonsense'"),
    ],
)
def test_writer_rejects_arrays_that_break_the_spec_and_publishes_nothing(tmp_path, name, value, message):
    store = Store(tmp_path / "s.zarr")
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with store.writer("scenes/s/demo", SPEC, meta(), "scene 's'") as out:
            out.write("points", np.zeros((10, 3), np.float32)) if name != "points" else None
            out.write(name, value)
    assert store.read("scenes/s/demo") is None
    assert store.leftovers() == []


def test_missing_required_array_is_an_error(tmp_path):
    store = Store(tmp_path / "s.zarr")
    with pytest.raises(SchemaError, match=r"required arrays not written: \['labels'\]"):
        with store.writer("scenes/s/demo", SPEC, meta(), "scene 's'") as out:
            out.write("points", np.zeros((10, 3), np.float32))
    assert store.read("scenes/s/demo") is None


def test_an_appended_array_grows_in_its_spec_chunks_and_set_dims_joins_the_group_dims(tmp_path):
    spec = GroupSpec(
        "demo",
        "test group",
        (
            ArraySpec("bytes", "uint8", ("B",), (4,), "appended"),
            ArraySpec("labels", "int16", ("N",), (4,), "class", required=False),
        ),
    )
    store = Store(tmp_path / "s.zarr")
    pieces = [np.arange(k, k + size, dtype=np.uint8) for k, size in ((0, 8), (8, 3), (11, 2))]
    with store.writer("scenes/s/demo", spec, meta(), "scene 's'") as out:
        for piece in pieces:
            out.append("bytes", piece)
        out.set_dims(N=6, H=2)
        out.write("labels", np.zeros(6, np.int16))
        with pytest.raises(SchemaError, match="dimension N=5, but an array of the group has N=6"):
            out.set_dims(N=5)
    group = store.read("scenes/s/demo")
    assert group.dims == {"B": 13, "N": 6, "H": 2} and group.array("bytes").chunks == (4,)
    np.testing.assert_array_equal(group.load("bytes"), np.arange(13))


def test_undeclared_info_is_an_error(tmp_path):
    store = Store(tmp_path / "s.zarr")
    with pytest.raises(SchemaError, match="not declared"):
        with store.writer("scenes/s/demo", SPEC, meta(), "scene 's'") as out:
            out.set_info(surprise=1)


def test_republish_replaces_the_old_group_whole(tmp_path):
    store = Store(tmp_path / "s.zarr")
    write(store, "scenes/s/demo", n=10, fp="f1")
    write(store, "scenes/s/demo", n=6, fp="f2", value=2.0)
    group = store.read("scenes/s/demo")
    assert group.fingerprint == "f2" and group.load("points").shape == (6, 3)
    assert (group.load("points") == 2.0).all()
    assert store.leftovers() == []


def test_fsspec_url_store_publishes_and_replaces(tmp_path):
    store = Store("memory://ovlift-test/store.zarr")
    write(store, "scenes/s/demo", n=10, fp="f1")
    write(store, "scenes/s/demo", n=5, fp="f2")
    group = store.read("scenes/s/demo", fingerprint="f2")
    assert group is not None and group.load("labels").tolist() == [0, 1, 2, 3, 4]
    assert store.scene_ids() == ["s"]


def test_clean_stale_removes_only_dead_writers_leftovers(tmp_path):
    store = Store(tmp_path / "s.zarr")
    proc = mp.get_context("spawn").Process(target=_leave_staging, args=(str(tmp_path / "s.zarr"),))
    proc.start()
    proc.join()
    assert len(store.leftovers()) == 1  # the dead process's staging group
    live = store._new_staging()
    store._staging_group(live)
    removed = store.clean_stale()
    assert len(removed) == 1 and live not in removed
    assert store.leftovers() == [live]


def _leave_staging(path):
    import os

    store = Store(path)
    store._staging_group(store._new_staging())
    os._exit(0)


def _concurrent_writer(path, barrier, value):
    store = Store(path)
    barrier.wait()
    for _ in range(5):
        write(store, "scenes/s/demo", n=1000, fp=f"f{value}", value=float(value))


def _first_writer_of_scenes(paths, barrier, index):
    for path in paths:
        store = Store(path)
        publish = store._publish

        def in_step(staging, target, fp, publish=publish):  # line the processes up at the racy moment
            barrier.wait()
            publish(staging, target, fp)

        store._publish = in_step
        write(store, f"scenes/new/stage{index}", n=10)


def test_processes_publishing_the_first_groups_of_a_scene_at_once_all_succeed(tmp_path):
    """Each must create the missing ``scenes/new`` parent; zarr checks and then creates,
    so all but one may lose that race and must then find it made."""
    paths = [str(tmp_path / f"s{trial}.zarr") for trial in range(10)]
    for path in paths:
        Store(path)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4, timeout=60)  # a writer that died breaks it: the others fail, not hang
    procs = [ctx.Process(target=_first_writer_of_scenes, args=(paths, barrier, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 4
    for path in paths:
        assert sorted(Store(path).stage_groups("new")) == [f"scenes/new/stage{i}" for i in range(4)], path


def test_two_processes_publishing_the_same_group_leave_a_whole_one(tmp_path):
    path = str(tmp_path / "s.zarr")
    Store(path)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_concurrent_writer, args=(path, barrier, v)) for v in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    group = Store(path).read("scenes/s/demo")
    value = {"f1": 1.0, "f2": 2.0}[group.fingerprint]
    assert (group.load("points") == value).all() and group.load("labels").shape == (1000,)
    assert Store(path).leftovers() == []


def _republisher(path, value, stop):
    store = Store(path)
    while not stop.is_set():  # same fingerprint, other bytes: as --force of a nondeterministic stage
        write(store, "scenes/s/demo", n=4000, fp="f1", value=float(value))


def test_a_reader_reads_one_whole_version_while_three_processes_republish(tmp_path):
    path = str(tmp_path / "s.zarr")
    store = Store(path)
    write(store, "scenes/s/demo", n=4000, fp="f1", value=1.0)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_republisher, args=(path, v, stop)) for v in (2, 3, 4)]
    for p in procs:
        p.start()
    try:
        versions = set()
        while len(versions) < 8:
            group = Store(path).read("scenes/s/demo")
            points = group.array("points")
            values = {float(points[i : i + 4][0, 0]) for i in range(0, 4000, 4)}  # chunk by chunk
            assert len(values) == 1 and values != {0.0}, values  # 0: a chunk vanished under the reader
            versions.add(group.version)
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(Store(path).versions("scenes/s/demo")) > 3  # superseded versions stay until gc


def test_a_store_of_the_old_format_is_refused_untouched(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "old.zarr"), mode="w")
    root.attrs["ovlift_store_format"] = 1
    with pytest.raises(StoreFormatError, match=r"has format 1; this ovlift reads format 2.*Nothing in it was changed"):
        Store(tmp_path / "old.zarr")
    assert zarr.open_group(str(tmp_path / "old.zarr"), mode="r").attrs["ovlift_store_format"] == 1
