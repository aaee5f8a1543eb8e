"""The store's training plan: which trainer trains a set of modules, how many per pass and which
dense twins a pass stores; single runs (``get_many``) go through the same plan."""

from pathlib import Path

from maxent_lightning.builders import build_datamodule
from maxent_lightning.modulestore import ModuleStore
from maxent_lightning.recipe import Recipe

IMP = ["imp.rounds=1", "imp.round_epochs=2"]  # round 0 trains as long as a dense module


def members(store, cfg, sets):
    return [(r, store.dir_for(cfg, r)) for r in sets]


def test_a_family_plan_splits_into_passes_of_chunk_size(make_cfg, tmp_path):
    cfg = make_cfg("family.chunk_size=2")
    store = ModuleStore(tmp_path)
    sets = [[0], [3], [5], [7], [9]]
    plan = store.passes(cfg, members(store, cfg, sets))
    assert [p.trainer for p in plan] == ["family"] * 3
    assert [[r for r, _ in p.members] for p in plan] == [[[0], [3]], [[5], [7]], [[9]]]
    assert all(p.chunk == 2 and p.device == "cpu" and not p.twins and p.why is None
               for p in plan)
    assert plan[0].members[1][1] == store.dir_for(cfg, [3])


def test_cross_entropy_passes_hold_equal_steps_per_epoch(make_cfg, tmp_path):
    cfg = make_cfg("loss=cross_entropy", "data.batch_size=32")
    store = ModuleStore(tmp_path)
    sets = [[0], [1, 2], [3], [4, 5, 6, 7, 8]]
    plan = store.passes(cfg, members(store, cfg, sets))
    labels = build_datamodule(cfg, [0], targets="maxent").train[2]

    def steps(r):
        return -(-sum(int((labels == c).sum()) for c in r) // 32)

    assert sorted(r for p in plan for r, _ in p.members) == sorted(sets)
    assert len(plan) == len({steps(r) for r in sets}) > 1
    assert all(len({steps(r) for r, _ in p.members}) == 1 for p in plan)


def test_sequential_passes_hold_one_module_each_and_say_why(make_cfg, tmp_path):
    store = ModuleStore(tmp_path)
    off = make_cfg("family.enabled=false")
    plan = store.passes(off, members(store, off, [[4], [1]]))
    assert [(p.trainer, p.chunk, p.why, [r for r, _ in p.members]) for p in plan] == [
        ("sequential", 1, None, [[4]]), ("sequential", 1, None, [[1]])]
    clipped = make_cfg("+trainer.gradient_clip_val=1")
    (p,) = store.passes(clipped, members(store, clipped, [[2]]))
    assert p.trainer == "sequential" and "gradient_clip_val" in p.why
    assert store.passes(off, []) == []


def test_twins_are_dense_modules_of_the_imp_passes_rewarded_sets(make_cfg, tmp_path):
    store = ModuleStore(tmp_path)
    imp = make_cfg(*IMP, "family.chunk_size=1")
    dense = make_cfg("imp=none")
    wanted = members(store, dense, [[4], [7]])
    again = [([4], tmp_path / "a"), ([5], tmp_path / "b")]
    plan = store.passes(imp, members(store, imp, [[4], [5]]),
                      dense=[(dense, wanted), (dense, again), (make_cfg(*IMP), [([5], tmp_path)])])
    # the first claim wins; [7] is no member; an IMP config is no twin
    assert [p.twins for p in plan] == [{(4,): (Recipe.of(dense), wanted[0][1])},
                                       {(5,): (Recipe.of(dense), tmp_path / "b")}]
    for no_twins in (make_cfg(*IMP, "family.enabled=false"), make_cfg("imp=none")):
        plan = store.passes(no_twins, members(store, no_twins, [[4]]), dense=[(dense, wanted)])
        assert not plan[0].twins
    off = make_cfg("imp=none", "family.enabled=false")
    assert not store.passes(imp, members(store, imp, [[4]]),
                          dense=[(off, members(store, off, [[4]]))])[0].twins


def test_get_many_trains_the_missing_modules_by_the_stores_plan(make_cfg, tmp_path,
                                                                 monkeypatch):
    cfg = make_cfg("family.chunk_size=2")
    store = ModuleStore(tmp_path)
    trained = []
    monkeypatch.setattr(ModuleStore, "train", lambda self, p, quiet=True: trained.append(p))
    paths = store.get_many(cfg, [[3], [0], [8], [6]])
    assert paths == [store.dir_for(cfg, r) / "module.pt" for r in ([3], [0], [8], [6])]
    assert trained == store.passes(cfg, members(store, cfg, [[3], [0], [8], [6]]))
    assert [[r for r, _ in p.members] for p in trained] == [[[3], [0]], [[8], [6]]]
    assert all(isinstance(d, Path) for p in trained for _, d in p.members)
