"""The control arm l12_retrained: a TrainConfig that takes its fixed shuffles from a finished run's rounded
permutations, and sweeps that run such runs after their sources (in this process and on the GPU workers)."""

import dataclasses
import json
import threading
import time

import pytest
import torch

from aslib.models import get_model
from aslib.nn.layers import ChannelShuffle, FixedPermutation
from aslib.nn.shuffles import fix_shuffles, fixed_permutations
from aslib.runner import sweep
from aslib.runner.sweep import _waves, execute, run_status
from aslib.study.arms import SHUFFLE_ARMS, Run, arm_config, grid
from aslib.training.config import TrainConfig
from aslib.training.state import run_permutations
from aslib.training.train import train

TINY = TrainConfig(dataset="digits", model="shufflenet_v1_g3", model_kwargs={"width": 0.25}, stages_repeats=(1, 1, 1),
                   epochs=1, batch_size=32, max_train_samples=128, recalibration_batches=1, show_progress=False,
                   lam=0.01, shuffle_parameterisation="projected")
SOURCE = "arm=l12/lam=0.01/seed=0"
RETRAINED = "arm=l12_retrained/lam=0.01/seed=0"


def test_the_retrained_run_uses_exactly_its_source_runs_permutations(tmp_path):
    # listed before its source: the sweep must still run the source first
    runs = grid(TINY, tmp_path, arms=["l12_retrained", "l12"], lam=[0.01], seed=[0])
    by_name = {r.name: r for r in runs}
    assert list(by_name) == [RETRAINED, SOURCE]
    config = by_name[RETRAINED].config
    assert (config.shuffle, config.lam, config.seed) == ("fixed", 0.01, 0)
    assert config.permutations_source.resolve() == by_name[SOURCE].folder.resolve()
    status = execute(runs, gpus=[], show_progress=False)
    assert list(status["status"]) == ["ok", "ok"], status["error"].tolist()
    learned = json.loads((by_name[SOURCE].folder / "result.json").read_text())["permutations"]
    assert len(learned) == 3 and learned == run_permutations(by_name[SOURCE].folder)
    saved = json.loads((by_name[RETRAINED].folder / "result.json").read_text())
    assert saved["fixed_permutations"] == learned and saved["permutations"] == []
    # the saved network's gather indices, in module order, are the learned ones
    weights = torch.load(by_name[RETRAINED].folder / "model.pt")
    assert [v.tolist() for k, v in weights.items() if k.endswith(".perm")] == learned
    # and the model train() builds holds them in FixedPermutation layers, no ChannelShuffle left
    again = train(dataclasses.replace(config, output_dir=str(tmp_path / "again"),
                                      shuffle_permutations_from=str(by_name[SOURCE].folder)))
    assert fixed_permutations(again.model) == learned
    assert not any(isinstance(m, ChannelShuffle) for m in again.model.modules())
    assert run_status(by_name[RETRAINED]) == "done"
    # a source whose permutations changed (computed again) makes the retrained run outdated
    path = by_name[SOURCE].folder / "result.json"
    source = json.loads(path.read_text())
    source["permutations"][0] = source["permutations"][0][::-1]
    path.write_text(json.dumps(source))
    assert run_status(by_name[SOURCE]) == "done" and run_status(by_name[RETRAINED]) == "outdated"
    path.unlink()
    assert run_status(by_name[RETRAINED]) == "outdated"


def test_a_retrained_run_fails_by_name_when_its_source_did_not_finish(tmp_path):
    runs = grid(dataclasses.replace(TINY, model_kwargs={"width": 0.25, "no_such_option": 1}), tmp_path,
                arms=["l12", "l12_retrained"], lam=[0.01], seed=[0])
    table = execute(runs, gpus=[], show_progress=False).set_index("run")
    assert table.loc[SOURCE, "status"] == "failed" and table.loc[RETRAINED, "status"] == "failed"
    assert "has not finished" in table.loc[RETRAINED, "error"]


def test_gpu_workers_start_a_dependent_run_only_after_its_source(tmp_path, monkeypatch):
    lock, events, active, peak = threading.Lock(), [], [0], [0]

    def fake_subprocess(run, gpus):  # noqa: ANN001, ANN202
        with lock:
            events.append(("start", run.name))
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            events.append(("end", run.name))
            active[0] -= 1
        return "ok", ""

    monkeypatch.setattr(sweep, "_subprocess", fake_subprocess)
    runs = grid(TINY, tmp_path, arms=["l12_retrained", "fixed", "l12"], lam=[0.01, 0.03], seed=[0, 1])
    table = execute(runs, gpus=[0, 1], runs_per_gpu=2, show_progress=False)
    assert (table["status"] == "ok").all() and len(events) == 2 * len(runs)
    position = {event: i for i, event in enumerate(events)}
    dependents = [r for r in runs if r.arm == "l12_retrained"]
    assert len(dependents) == 4
    for run in dependents:
        source = next(r for r in runs if r.folder.resolve() == run.config.permutations_source.resolve())
        assert source.arm == "l12" and (source.config.lam, source.config.seed) == (run.config.lam, run.config.seed)
        assert position[("start", run.name)] > position[("end", source.name)]
    assert peak[0] == 4  # the independent runs still share the workers


def test_waves_order_sources_first_and_refuse_cycles(tmp_path):
    runs = grid(TINY, tmp_path, arms=["l12_retrained", "fixed", "l12"], lam=[0.01], seed=[0])
    assert [[r.arm for r in wave] for wave in _waves(runs)] == [["fixed", "l12"], ["l12_retrained"]]
    assert [[r.arm for r in wave] for wave in _waves(runs[1:])] == [["fixed", "l12"]]
    # a source outside the sweep (already finished elsewhere) does not hold a run back
    assert [[r.arm for r in wave] for wave in _waves(runs[:1])] == [["l12_retrained"]]
    a = Run("a", dataclasses.replace(TINY, shuffle="fixed", output_dir=str(tmp_path / "a"),
                                     shuffle_permutations_from="../b"))
    b = Run("b", dataclasses.replace(a.config, output_dir=str(tmp_path / "b"), shuffle_permutations_from="../a"))
    with pytest.raises(ValueError, match="cycle: a, b"):
        _waves([a, b])


def test_bad_permutation_sources_are_refused():
    with pytest.raises(ValueError, match="shuffle_permutations_from needs shuffle 'fixed'"):
        dataclasses.replace(TINY, shuffle_permutations_from="../l12")
    with pytest.raises(ValueError, match="needed by an arm with a source"):
        arm_config(TINY, "l12_retrained")
    with pytest.raises(ValueError, match="needed by an arm with a source"):
        arm_config(TINY, "fixed", permutations_from="../l12")
    with pytest.raises(ValueError, match="retrains the permutations of arm 'l12': run that arm too"):
        grid(TINY, "runs", arms=["fixed", "l12_retrained"], seed=[0])
    assert SHUFFLE_ARMS["l12_retrained"].irrelevant() == tuple(
        f for f in SHUFFLE_ARMS["fixed"].irrelevant() if f != "lam")
    model = get_model("shufflenet_v1_g3", shuffle="fixed", width=0.25, stages_repeats=(1, 1, 1))
    with pytest.raises(ValueError, match="1 given, the model has 3 channel shuffles"):
        fix_shuffles(model, [[0, 1, 2]])
    with pytest.raises(ValueError, match="a permutation of 3 channels for a shuffle of"):
        fix_shuffles(model, [[0, 1, 2]] * 3)


def test_fix_shuffles_computes_the_given_gathers():
    model = get_model("shufflenet_v1_g3", shuffle="fixed", width=0.25, stages_repeats=(1, 1, 1))
    widths = [m.channels for m in model.modules() if isinstance(m, ChannelShuffle)]
    generator = torch.Generator().manual_seed(0)
    perms = [torch.randperm(c, generator=generator).tolist() for c in widths]
    fix_shuffles(model, perms)
    layers = [m for m in model.modules() if isinstance(m, FixedPermutation)]
    assert fixed_permutations(model) == perms and len(layers) == 3
    x = torch.randn(2, widths[0], 4, 4)
    assert torch.equal(layers[0](x), x[:, perms[0]])  # out[:, k] = in[:, perm[k]], indexed by hand
