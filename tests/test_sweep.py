"""Sweeps: run naming, arms, the plan, the data check, skipping and spreading runs over devices."""

import dataclasses
import json
import math
import threading
import time
from collections import Counter

import pytest
import torch

from aslib.study.arms import SHUFFLE_ARMS, Run, arm_config, classification_runs, grid
from aslib.training.config import TrainConfig
from aslib.training.data import DATASET_INFO, load_dataset
from aslib.training.loop import evaluate
from aslib.models import count_flops, get_model
from aslib.models import from_config
from aslib.utils.runtime import code_fingerprint
from aslib.study.report import collect, histories, layer_penalty_tables, summarise_seeds
from aslib.runner import sweep
from aslib.runner.sweep import _command, check_data, execute, plan, run_status
from aslib.training.speed import training_throughput

TINY_RUN = TrainConfig(dataset="digits", model="shufflenet_v2_0.5", stages_repeats=(1, 1, 1), epochs=2, batch_size=32,
                   max_train_samples=256, recalibration_batches=2, show_progress=False, lam=1e-3)


def test_arms_set_shuffle_and_penalty():
    assert arm_config(TINY_RUN, "fixed").shuffle == "fixed" and arm_config(TINY_RUN, "fixed").lam == 0
    assert arm_config(TINY_RUN, "relaxed").shuffle == "learned" and arm_config(TINY_RUN, "relaxed").lam == 0
    assert arm_config(TINY_RUN, "l12").lam == 1e-3 and arm_config(TINY_RUN, "l12", lam=0.5).lam == 0.5
    assert {arm_config(TINY_RUN, a).shuffle for a in SHUFFLE_ARMS if not SHUFFLE_ARMS[a].source} == {
        "fixed", "none", "random", "learned"}
    retrained = arm_config(TINY_RUN, "l12_retrained", lam=0.5, permutations_from="../l12")  # lam names the source's
    assert (retrained.shuffle, retrained.lam, retrained.shuffle_permutations_from) == ("fixed", 0.5, "../l12")
    sinkhorn = arm_config(TINY_RUN, "sinkhorn", lam=0.5)
    assert (sinkhorn.shuffle, sinkhorn.shuffle_parameterisation, sinkhorn.lam) == ("learned", "sinkhorn", 0.0)
    assert {arm_config(TINY_RUN, a).shuffle_parameterisation for a in SHUFFLE_ARMS
            if a not in ("sinkhorn", "l12_mirror", "l12_retrained")} == {"projected"}
    mirror = arm_config(TINY_RUN, "l12_mirror", lam=0.5)  # its penalty weight is mirror_lam, applied in its step
    assert (mirror.shuffle, mirror.shuffle_parameterisation, mirror.lam) == ("learned", "mirror", 0.0)
    with pytest.raises(ValueError, match="unknown arm 'l2'; valid arms: fixed"):
        arm_config(TINY_RUN, "l2")


def test_grid_names_are_stable_and_irrelevant_axes_collapse(tmp_path):
    runs = grid(TINY_RUN, tmp_path, arms=["fixed", "relaxed", "l12"], lam=[1e-3, 1e-2], shuffle_init=["shuffle", "uniform"],
                seed=[0, 1])
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    # fixed: once per seed; relaxed: per init and seed; l12: per init, lam and seed
    assert len(runs) == 2 + 2 * 2 + 2 * 2 * 2
    assert "arm=fixed/seed=1" in names
    assert "shuffle_init=uniform/arm=l12/lam=0.01/seed=0" in names
    by_name = {r.name: r for r in runs}
    l12 = by_name["shuffle_init=uniform/arm=l12/lam=0.01/seed=0"].config
    assert (l12.shuffle, l12.lam, l12.shuffle_init, l12.seed) == ("learned", 0.01, "uniform", 0)
    assert l12.output_dir == str(tmp_path / "shuffle_init=uniform/arm=l12/lam=0.01/seed=0")
    assert by_name["shuffle_init=shuffle/arm=relaxed/seed=1"].config.lam == 0
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        grid(TINY_RUN, tmp_path, arms=["fixed"], learning_rate=[0.1])
    # sinkhorn: per init and seed, neither lam nor projection sweeps apply
    sinkhorn = grid(TINY_RUN, tmp_path, arms=["sinkhorn"], lam=[1e-3, 1e-2], projection_sweeps=[1, 5],
                    shuffle_init=["uniform"], seed=[0])
    assert [r.name for r in sinkhorn] == ["shuffle_init=uniform/arm=sinkhorn/seed=0"]
    assert sinkhorn[0].config.lam == 0 and sinkhorn[0].config.shuffle_parameterisation == "sinkhorn"
    # the mirror step's settings collapse for every other arm; lam for the mirror arm, not its sweeps
    both = grid(TINY_RUN, tmp_path, arms=["l12", "l12_mirror"], lam=[1e-3], mirror_lam=[1.0, 3.0],
                projection_sweeps=[1, 2], seed=[0])
    assert sorted(r.name for r in both) == sorted(
        [f"projection_sweeps={s}/arm=l12/lam=0.001/seed=0" for s in (1, 2)]
        + [f"mirror_lam={m}/projection_sweeps={s}/arm=l12_mirror/seed=0" for m in (1.0, 3.0) for s in (1, 2)])


def test_classification_runs_distribute_imagenet_only(tmp_path):
    common = dict(root=tmp_path, models=["shufflenet_v1_g3"], arms=["fixed", "l12"], seeds=[0], lams=[1e-3],
                  epochs=1, batch_size=8, lr=0.1)
    runs = classification_runs(datasets=["cifar10", "imagenet"], **common)
    assert [(r.config.dataset, r.distributed) for r in runs] == [("cifar10", False)] * 2 + [("imagenet", True)] * 2
    assert runs[0].name == "dataset=cifar10/model=shufflenet_v1_g3/arm=fixed/seed=0"


def test_plan_estimates_and_status(tmp_path):
    runs = grid(TINY_RUN, tmp_path, arms=["fixed", "l12"], seed=[0])
    table = plan(runs, "cpu", measure=False)
    assert list(table["status"]) == ["new", "new"]
    # the estimate is 3 x forward FLOPs x images x epochs at the assumed 1 GFLOP/s of a CPU, and says it is a guess
    flops = count_flops(get_model("shufflenet_v2_0.5", shuffle="fixed", num_classes=10, in_channels=1,
                                  stem="cifar", stages_repeats=(1, 1, 1)), (1, 1, 8, 8))
    assert table["estimated_minutes"].tolist() == [round(3 * flops * 256 * 2 / 1e9 / 60, 1)] * 2
    assert table["estimate"].str.startswith("guess").all()
    bigger = plan(grid(dataclasses.replace(TINY_RUN, epochs=100, max_train_samples=None), tmp_path, arms=["l12"]), "cpu",
                  measure=False)
    assert bigger["estimated_minutes"].iloc[0] == round(3 * flops * DATASET_INFO["digits"].train_size * 100 / 6e10, 1)
    assert bigger["estimated_minutes"].iloc[0] > 0
    runs[0].folder.mkdir(parents=True)
    (runs[0].folder / "checkpoint.pt").write_bytes(b"")
    assert run_status(runs[0]) == "interrupted"
    record = {"config": runs[0].config.to_dict(), "code_fingerprint": code_fingerprint()}
    (runs[0].folder / "result.json").write_text(json.dumps(record))
    assert run_status(runs[0]) == "done"
    # a record of other code (or of code before fingerprints) is outdated, never shown as done
    for other in ("0123456789abcdef", None):
        (runs[0].folder / "result.json").write_text(json.dumps({**record, "code_fingerprint": other}))
        assert run_status(runs[0]) == "outdated"


def test_missing_data_set_refused_up_front(tmp_path):
    runs = grid(dataclasses.replace(TINY_RUN, dataset="cifar100", data_root=str(tmp_path / "nodata")), tmp_path,
                arms=["fixed"])
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        check_data(runs)
    with pytest.raises(FileNotFoundError):
        execute(runs, gpus=[], show_progress=False)
    assert not (tmp_path / "arm=fixed").exists()


def test_execute_in_process_then_skips_done_runs(tmp_path):
    runs = grid(TINY_RUN, tmp_path, arms=["fixed", "l12"], seed=[0])
    first = execute(runs, gpus=[], show_progress=False)
    assert list(first["status"]) == ["ok", "ok"], first["error"].tolist()
    results = collect(runs)
    assert list(results["run"]) == [r.name for r in runs]
    assert (results["test_acc_hard"] > 0.2).all()  # 10 classes: well above chance after 16 steps
    # the collected accuracy is that of the saved, rounded model on the test set
    test = load_dataset("digits").test
    for run, acc in zip(runs, results["test_acc_hard"]):
        model = from_config(run.config, num_classes=10, in_channels=1, stem="cifar")
        model.load_state_dict(torch.load(run.folder / "model.pt"))
        assert evaluate(model, test)[1] == acc
    second = execute(runs, gpus=[], show_progress=False)
    assert list(second["status"]) == ["skipped (done)"] * 2
    # a result of other code is run again from scratch (its old checkpoint is not resumed)
    path = runs[1].folder / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "code_fingerprint": "0123456789abcdef"}))
    assert run_status(runs[1]) == "outdated"
    third = execute(runs, gpus=[], show_progress=False)
    assert list(third["status"]) == ["skipped (done)", "ok"]
    rerun = json.loads(path.read_text())
    assert rerun["code_fingerprint"] == code_fingerprint() and rerun["test_acc_hard"] == results["test_acc_hard"].iloc[1]


def test_tiny_sweep_with_the_sinkhorn_arm(tmp_path):
    runs = grid(dataclasses.replace(TINY_RUN, epochs=1, max_train_samples=128), tmp_path, arms=["l12", "sinkhorn"],
                seed=[0])
    status = execute(runs, gpus=[], show_progress=False)
    assert list(status["status"]) == ["ok", "ok"], status["error"].tolist()
    results = collect(runs).set_index("arm")
    assert results.loc["sinkhorn", "lam"] == 0 and results.loc["sinkhorn", "shuffle"] == "learned"
    assert results.loc["sinkhorn", "final_penalty"] > 0 and 0 <= results.loc["sinkhorn", "test_acc_hard"] <= 1
    assert results.loc["sinkhorn", "num_parameters_inference"] == results.loc["l12", "num_parameters_inference"]
    tables = layer_penalty_tables(runs)
    assert set(tables) == {r.name for r in runs}
    for name, table in tables.items():
        assert table["epoch"].tolist() == [1] and table.shape[1] == 1 + 3  # three learned shuffles
        history = histories(runs)[name]
        assert table.iloc[0, 1:].sum() == pytest.approx(history["penalty"].iloc[0], rel=1e-6)


def test_failing_run_is_reported_and_the_others_still_run(tmp_path):
    good = grid(TINY_RUN, tmp_path, arms=["fixed"])[0]
    bad = Run("bad", dataclasses.replace(TINY_RUN, output_dir=str(tmp_path / "bad"), model_kwargs={"no_such_option": 1}))
    table = execute([bad, good], gpus=[], show_progress=False)
    assert list(table["status"]) == ["failed", "ok"]
    assert "no_such_option" in table["error"].iloc[0]


def test_plan_measures_each_distinct_network_once(tmp_path, monkeypatch):
    measured = []

    def throughput(config, device):  # noqa: ANN001, ANN202
        measured.append((config.shuffle, device))
        return 64.0 if config.shuffle == "fixed" else 32.0

    monkeypatch.setattr(sweep, "training_throughput", throughput)
    runs = grid(TINY_RUN, tmp_path, arms=["fixed", "l12"], seed=[0, 1])
    table = plan(runs, "cpu")
    assert sorted(measured) == [("fixed", "cpu"), ("learned", "cpu")]
    minutes = {"fixed": round(256 * 2 / 64 / 60, 1), "learned": round(256 * 2 / 32 / 60, 1)}
    assert table["estimated_minutes"].tolist() == [minutes[r.config.shuffle] for r in runs]
    assert (table["estimate"] == sweep.MEASURED_NOTE).all()
    assert (plan(runs, "cuda")["estimate"] == sweep.ESTIMATE_NOTE).all() or torch.cuda.is_available()


def test_training_throughput_times_real_steps():
    config = dataclasses.replace(TINY_RUN, batch_size=16)
    ips = training_throughput(config, "cpu", steps=2)
    assert math.isfinite(ips) and ips > 0


@pytest.mark.parametrize("runs_per_gpu", [1, 3])
def test_runs_per_gpu_share_each_device(tmp_path, monkeypatch, runs_per_gpu):
    lock, active, peak, seen = threading.Lock(), Counter(), Counter(), []

    def fake_subprocess(run, gpus):  # noqa: ANN001, ANN202
        with lock:
            active[gpus[0]] += 1
            peak[gpus[0]] = max(peak[gpus[0]], active[gpus[0]])
            seen.append(gpus)
        time.sleep(0.3)
        with lock:
            active[gpus[0]] -= 1
        return "ok", ""

    monkeypatch.setattr(sweep, "_subprocess", fake_subprocess)
    runs = grid(TINY_RUN, tmp_path, arms=["fixed"], seed=list(range(6)))
    table = execute(runs, gpus=[0, 1], runs_per_gpu=runs_per_gpu, show_progress=False)
    assert (table["status"] == "ok").all() and len(seen) == 6 and all(len(g) == 1 for g in seen)
    assert max(peak.values()) <= runs_per_gpu and set(peak) == {0, 1}
    if runs_per_gpu > 1:
        assert max(peak.values()) > 1
    with pytest.raises(ValueError, match="runs_per_gpu"):
        execute(runs, gpus=[0], runs_per_gpu=0, show_progress=False)


def test_subprocess_workers_one_per_device(tmp_path, monkeypatch):
    # On a machine without CUDA the "GPUs" are just worker slots: each run still goes through the
    # subprocess path (config.json written, run from it, log.txt), two at a time. The runs inherit the
    # environment: one OpenMP thread each, as two processes of several threads on two cores crawl.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    runs = grid(TINY_RUN, tmp_path, arms=["fixed", "none"], seed=[0])
    table = execute(runs, gpus=[0, 1], show_progress=False)
    assert list(table["status"]) == ["ok", "ok"], [open(p).read()[-2000:] for p in table["log"]]
    for run in runs:
        assert TrainConfig.from_dict(json.loads((run.folder / "config.json").read_text())) == run.config
        assert (run.folder / "result.json").is_file() and (run.folder / "log.txt").is_file()


def test_distributed_runs_use_torchrun_over_all_devices(tmp_path):
    run = Run("ddp", dataclasses.replace(TINY_RUN, output_dir=str(tmp_path / "ddp")), distributed=True)
    command = _command(run, 4)
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"] and "--nproc_per_node=4" in command
    assert command[-4:] == ["-m", "aslib.runner.sweep", "--run-config", str(tmp_path / "ddp" / "config.json")]
    single = _command(dataclasses.replace(run, distributed=False), 4)
    assert "torch.distributed.run" not in single


def test_result_of_other_settings_is_stale_and_never_overwritten(tmp_path):
    runs = grid(TINY_RUN, tmp_path, arms=["fixed"], seed=[0])
    execute(runs, gpus=[], show_progress=False)
    before = (runs[0].folder / "result.json").read_bytes()
    longer = grid(dataclasses.replace(TINY_RUN, epochs=3), tmp_path, arms=["fixed"], seed=[0])
    assert plan(longer, "cpu")["status"].tolist() == ["stale"]
    with pytest.raises(ValueError, match=r"other settings.*epochs: 2 -> 3"):
        execute(longer, gpus=[], show_progress=False)
    assert (runs[0].folder / "result.json").read_bytes() == before


def test_summarise_means_over_seeds():
    import pandas as pd

    results = pd.DataFrame({"dataset": ["d"] * 3, "model": ["m"] * 3, "arm": ["l12", "l12", "fixed"],
                            "shuffle_init": ["uniform", "uniform", None], "projection_sweeps": [1, 1, None],
                            "lam": [0.1, 0.1, 0.0], "test_acc_soft": [0.5, 0.7, 0.9], "test_acc_hard": [0.4, 0.6, 0.9],
                            "rounding_change": [-0.1, -0.1, 0.0], "final_penalty": [1.0, 3.0, 0.0]})
    table = summarise_seeds(results).set_index("arm")
    assert table.loc["l12", "seeds"] == 2 and table.loc["fixed", "seeds"] == 1
    assert table.loc["l12", "test_acc_soft_mean"] == pytest.approx(0.6)
    assert table.loc["l12", "final_penalty_std"] == pytest.approx(2 ** 0.5)


def test_the_gpu_short_plan_runs_on_a_cpu_with_tiny_settings(tmp_path):
    """Every network, arm and setting of the gpu-short profile but the sizes: one seed, one epoch on a tiny CIFAR-10
    written in torchvision's format, one stage unit, 32 images, through the same plan, execute and collect."""
    from test_data import write_cifar10

    from aslib.runner.profiles import load_profile
    from aslib.study.arms import notebook_runs

    profile = load_profile("gpu-short")
    parameters = dict(profile.notebooks["04_cifar"])
    assert parameters["runs_per_gpu"] > 1 and parameters["datasets"] == ["cifar10"]
    write_cifar10(tmp_path / "data", per_batch=8)
    tiny = {**parameters, "seeds": parameters["seeds"][:1], "epochs": 1, "batch_size": 8, "max_train_samples": 32,
            "stages_repeats": [1, 1, 1], "recalibration_batches": 1, "output_dir": str(tmp_path / "runs"),
            "data_root": str(tmp_path / "data")}
    runs = notebook_runs("04_cifar", tiny)
    arms = {(r.config.model, r.config.shuffle, r.config.lam) for r in runs}
    assert len(runs) == len(parameters["models"]) * len(parameters["arms"]) == len(arms)
    assert (plan(runs, "cpu")["status"] == "new").all()
    status = execute(runs, gpus=[], runs_per_gpu=tiny["runs_per_gpu"], show_progress=False)
    assert (status["status"] == "ok").all(), status["error"].tolist()
    results = collect(runs)
    assert len(results) == len(runs) and results["test_acc_hard"].between(0, 1).all()
    assert (plan(runs, "cpu", measure=False)["status"] == "done").all()
