"""The training loop on the embedded digits: learning, rounding, recalibration, files, resume, two processes."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from aslib.training.data import load_dataset
from aslib.nn.layers import LearnedShuffle
from aslib.nn.shuffles import learned_shuffles
from aslib.core.penalty import l12_penalty
from aslib.training.config import TrainConfig, config_changes, parse_args
from aslib.training.loop import evaluate, make_optimizer
from aslib.training.state import HISTORY_COLUMNS, TrainState
from aslib.training.train import main, train

from helpers import REPO_ROOT, tiny_shufflenet

# The tiniest ShuffleNet v1 (three units) on a few hundred digits: a couple of seconds per run.
#: hard_phase 0: these tests follow soft shuffles to the end and their rounding there (the paper's recipe); the hard
#: phase has its own tests (test_rounding_health.py)
TINY_FIELDS = dict(model="shufflenet_v1_g3", model_kwargs={"width": 0.25}, stages_repeats=(1, 1, 1), batch_size=32,
            show_progress=False, recalibration_batches=4, hard_phase=0.0)
TINY_ARGS = ["--model", "shufflenet_v1_g3", "--model-kwargs", '{"width": 0.25}', "--stages-repeats", "1", "1", "1",
             "--batch-size", "32", "--no-show-progress", "--recalibration-batches", "4", "--max-train-samples", "240",
             "--epochs", "3", "--lam", "0.03", "--shuffle-init", "uniform", "--shuffle-noise", "0.1"]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env




# --- configuration and command line -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"dataset": "cifar11"}, "unknown dataset 'cifar11'"),
    ({"shuffle": "learnt"}, "unknown shuffle"),
    ({"model": "resnet18"}, "unknown model"),
    ({"lr": -0.1}, "lr must be >= 0"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"epochs": True}, "epochs must be of type int"),
    ({"val_fraction": 1.0}, "val_fraction must be < 1"),
    ({"lam": float("nan")}, "lam must be of type float"),
    ({"mirror_lam": -1.0}, "mirror_lam must be >= 0"),
    ({"shuffle_parameterisation": "mirrored"}, "unknown shuffle_parameterisation"),
    ({"stages_repeats": (1, 1)}, "stages_repeats"),
    ({"amp_dtype": "float8"}, "unknown amp_dtype"),
    ({"shuffle_parameterisation": "softmax"}, "unknown shuffle_parameterisation 'softmax'"),
    ({"model_kwargs": {"shuffle": "fixed"}}, "model_kwargs may not set shuffle"),
    ({"seed": 2**32}, "seed must be < "),
])
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_config_round_trips_through_a_dict():
    config = TrainConfig(lam=0.2, stages_repeats=(1, 2, 3), model_kwargs={"width": 0.5})
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown TrainConfig fields: colour"):
        TrainConfig.from_dict({"colour": "red"})
    assert TrainConfig(stages_repeats=[1, 2, 3]).stages_repeats == (1, 2, 3)


def test_a_builder_argument_the_model_does_not_take_is_refused(tmp_path, capsys):
    config = TrainConfig(**{**TINY_FIELDS, "model_kwargs": {"widht": 0.25}}, epochs=1, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="widht"):
        train(config)
    # the command line reports it (and a missing data set) without a traceback
    assert main(["--model-kwargs", '{"widht": 0.25}', "--output-dir", str(tmp_path)]) == 1
    assert main(["--dataset", "cifar10", "--data-root", str(tmp_path), "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "widht" in err and str(tmp_path / "cifar-10-batches-py") in err and "Traceback" not in err


def test_command_line_has_one_option_per_field():
    config, resume = parse_args(["--dataset", "cifar100", "--lam", "0.05", "--no-augment", "--max-train-samples",
                                 "none", "--stages-repeats", "2", "3", "4", "--model-kwargs", '{"width": 0.5}',
                                 "--resume"])
    assert config == TrainConfig(dataset="cifar100", lam=0.05, augment=False, max_train_samples=None,
                                 stages_repeats=(2, 3, 4), model_kwargs={"width": 0.5})
    assert resume
    assert parse_args([]) == (TrainConfig(), False)
    assert parse_args(["--max-train-samples", "7"])[0].max_train_samples == 7


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar11"], "invalid choice: 'cifar11'"),
    (["--lam", "-1"], "lam must be >= 0"),
    (["--model-kwargs", "[1]"], "expected a JSON object"),
    (["--colour", "red"], "unrecognized arguments: --colour"),
])
def test_command_line_errors_name_the_problem(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# --- the pieces ---------------------------------------------------------------------------------------







# --- whole runs ---------------------------------------------------------------------------------------

class _Recorder:
    def __init__(self) -> None:
        self.states: list[tuple[int, float, float]] = []

    def on_epoch_end(self, state: TrainState) -> None:
        M = [layer.weight.detach() for layer in learned_shuffles(state.model)]
        self.states.append((state.epoch, max(float((m.sum(1) - 1).abs().max()) for m in M),
                            math.fsum(float(l12_penalty(m)) for m in M)))


def test_digits_run_learns_rounds_and_writes_its_files(tmp_path):
    recorder, seen = _Recorder(), []
    config = TrainConfig(**TINY_FIELDS, epochs=3, lam=0.03, lam_warmup_epochs=2, shuffle_init="uniform", shuffle_noise=0.1,
                         output_dir=str(tmp_path))
    result = train(config, callbacks=[recorder, lambda s: seen.append(len(s.history))])
    # clearly better than chance (0.1) after three short epochs
    assert result.test_acc_soft > 0.6 and result.test_acc_hard > 0.6
    assert seen == [1, 2, 3] and [e for e, _, _ in recorder.states] == [1, 2, 3]
    # after every epoch each M is row-stochastic (projection) and the logged penalty is theirs
    assert all(dev < 1e-5 for _, dev, _ in recorder.states)
    history = pd.read_csv(tmp_path / "history.csv")
    assert tuple(history.columns) == HISTORY_COLUMNS and history["epoch"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(history["penalty"], [p for _, _, p in recorder.states], rtol=1e-5)
    pd.testing.assert_frame_equal(history, result.history, check_dtype=False)
    # the penalty of each learned shuffle per epoch, which sum to the logged total
    per_layer = pd.read_csv(tmp_path / "layer_penalties.csv")
    assert list(per_layer.columns) == ["epoch", "layer_0", "layer_1", "layer_2"]
    assert per_layer["epoch"].tolist() == [1, 2, 3] and (per_layer.iloc[:, 1:] >= 0).all().all()
    np.testing.assert_allclose(per_layer.iloc[:, 1:].sum(axis=1), history["penalty"], rtol=1e-6)
    # the lam ramp (two epochs) and the per-step cosine schedule, read back from the history
    steps = len(load_dataset("digits").train) // 32
    np.testing.assert_allclose(history["lam"], [0.015, 0.03, 0.03], rtol=1e-9)
    t = np.arange(1, 4) * steps - 1
    np.testing.assert_allclose(history["lr"], 0.05 * (1 + np.cos(np.pi * t / (3 * steps))), rtol=1e-6, atol=1e-12)
    # rounding: every learned shuffle became the gather of its reported permutation
    layers = learned_shuffles(result.model)
    assert len(layers) == len(result.permutations) == 3 and all(layer.is_hardened for layer in layers)
    for layer, perm in zip(layers, result.permutations):
        assert layer.perm.tolist() == perm and sorted(perm) == list(range(len(perm)))
    assert result.num_parameters - result.num_parameters_inference == sum(len(p) ** 2 for p in result.permutations)
    assert result.rounding_change == pytest.approx(result.test_acc_hard - result.test_acc_soft)
    # the saved model is the rounded one and gives the reported hard accuracy
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["test_acc_hard"] == result.test_acc_hard and summary["config"]["lam"] == 0.03
    fresh = tiny_shufflenet()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    assert all(isinstance(m, LearnedShuffle) and m.is_hardened for m in learned_shuffles(fresh))
    assert evaluate(fresh, load_dataset("digits").test)[1] == result.test_acc_hard
    assert (tmp_path / "checkpoint.pt").is_file()


def test_penalty_drives_shuffles_to_permutations_where_the_relaxation_does_not(tmp_path):
    common = dict(TINY_FIELDS, epochs=3, max_train_samples=400, shuffle_init="uniform", shuffle_noise=0.1, checkpoint=False,
                  shuffle_parameterisation="projected")  # lam weighs the projected step's penalty
    relaxed = train(TrainConfig(**common, lam=0.0, output_dir=str(tmp_path / "relaxed")))
    l12 = train(TrainConfig(**common, lam=0.05, output_dir=str(tmp_path / "l12")))
    assert l12.final_penalty < 0.5 * relaxed.final_penalty
    # a fixed shuffle has nothing to learn or round: no parameters besides the network's, no change
    fixed = train(TrainConfig(**{**common, "epochs": 1, "max_train_samples": 64}, shuffle="fixed",
                              output_dir=str(tmp_path / "fixed")))
    assert fixed.permutations == [] and fixed.rounding_change == 0 and math.isnan(fixed.final_rounding_fraction)


def test_parameterisation_changes_results_and_predates_nothing():
    saved = TrainConfig().to_dict()
    assert config_changes(saved, TrainConfig(shuffle_parameterisation="sinkhorn")) == [
        "shuffle_parameterisation: 'mirror' -> 'sinkhorn'"]
    # a configuration saved before the field existed had the default
    del saved["shuffle_parameterisation"]
    assert config_changes(saved, TrainConfig()) == []
    assert config_changes(saved, TrainConfig(shuffle_parameterisation="sinkhorn")) != []


def test_resume_refuses_a_changed_configuration(tmp_path):
    config = TrainConfig(**TINY_FIELDS, epochs=1, max_train_samples=64, output_dir=str(tmp_path))
    train(config)
    with pytest.raises(ValueError, match=r"configuration changed \(lam: 0.03 -> 0.5\)"):
        train(TrainConfig(**{**TINY_FIELDS, "lam": 0.5}, epochs=1, max_train_samples=64, output_dir=str(tmp_path)),
              resume=True)


def _state_dicts_equal(a: Path, b: Path) -> None:
    sa, sb = torch.load(a), torch.load(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    """SIGKILL after the first checkpoint, resume: weights, history and accuracies equal an uninterrupted run."""
    cmd = [sys.executable, "-m", "aslib.training.train", *TINY_ARGS]
    whole = subprocess.Popen([*cmd, "--output-dir", str(tmp_path / "whole")], env=_env(), cwd=REPO_ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = subprocess.Popen([*cmd, "--output-dir", str(tmp_path / "killed")], env=_env(), cwd=REPO_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    epoch = torch.load(checkpoint, weights_only=False)["epoch"]
    assert 1 <= epoch < 3 and not (tmp_path / "killed" / "result.json").exists()
    resumed = subprocess.run([*cmd, "--output-dir", str(tmp_path / "killed"), "--resume"], env=_env(), cwd=REPO_ROOT,
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert whole.wait() == 0, whole.stderr.read().decode()
    _state_dicts_equal(tmp_path / "whole" / "model.pt", tmp_path / "killed" / "model.pt")
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("whole", "killed"))
    for d in (a, b):
        d.pop("seconds")
        d["config"].pop("output_dir")
    assert a == b
    ha, hb = (pd.read_csv(tmp_path / d / "history.csv").drop(columns="seconds") for d in ("whole", "killed"))
    pd.testing.assert_frame_equal(ha, hb)
    pa, pb = (pd.read_csv(tmp_path / d / "layer_penalties.csv") for d in ("whole", "killed"))
    assert len(pa) == 3
    pd.testing.assert_frame_equal(pa, pb)


def test_two_processes_with_gloo(tmp_path):
    """``torchrun --nproc_per_node 2`` on the CPU: completes, rank 0 writes the files, both ranks agree."""
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys, torch\n"
        "from aslib.training.config import parse_args\nfrom aslib.training.train import train\n"
        "config, _ = parse_args(sys.argv[1:])\n"
        "result = train(config)\n"
        "torch.save(result.model.state_dict(), os.path.join(sys.argv[-1] + '_rank' + os.environ['RANK'] + '.pt'))\n"
    )
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         *TINY_ARGS, "--device", "cpu", "--output-dir", str(out)],  # gloo on the CPU, also where a GPU exists
        env=_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("history.csv", "result.json", "model.pt", "checkpoint.pt"):
        assert (out / name).is_file(), name
    _state_dicts_equal(Path(f"{out}_rank0.pt"), Path(f"{out}_rank1.pt"))
    _state_dicts_equal(Path(f"{out}_rank0.pt"), out / "model.pt")
    summary = json.loads((out / "result.json").read_text())
    assert len(pd.read_csv(out / "history.csv")) == 3
    # the sharded, all-reduced evaluation counts every test image once
    model = tiny_shufflenet()
    model.load_state_dict(torch.load(out / "model.pt"))
    assert evaluate(model, load_dataset("digits").test)[1] == pytest.approx(summary["test_acc_hard"], abs=1e-12)


# --- progressive hardening ----------------------------------------------------------------------------



class _StopAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    def __call__(self, state):
        if state.epoch == self.epoch:
            raise KeyboardInterrupt


def test_hardening_during_training_freezes_shuffles_and_resumes_exactly(tmp_path):
    common = dict(TINY_FIELDS, epochs=3, max_train_samples=240, lam=0.03, shuffle_init="random", shuffle_noise=0.0,
                  harden_after=1)
    whole = train(TrainConfig(**common, output_dir=str(tmp_path / "whole")))
    # started at permutations (penalty 0): every shuffle is frozen during training, most at the first epoch end
    assert all(1 <= e <= 3 for e in whole.hardened_epochs) and whole.hardened_epochs.count(1) >= 2
    assert json.loads((tmp_path / "whole" / "result.json").read_text())["hardened_epochs"] == whole.hardened_epochs
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**common, output_dir=str(tmp_path / "cut")), callbacks=[_StopAfter(2)])
    resumed = train(TrainConfig(**common, output_dir=str(tmp_path / "cut")), resume=True)
    assert resumed.hardened_epochs == whole.hardened_epochs and resumed.test_acc_hard == whole.test_acc_hard
    _state_dicts_equal(tmp_path / "whole" / "model.pt", tmp_path / "cut" / "model.pt")
    off = train(TrainConfig(**{**common, "harden_after": 0}, output_dir=str(tmp_path / "off")))
    assert off.hardened_epochs == [0, 0, 0]


def test_measure_speed_can_time_inference_only() -> None:
    from aslib.training.speed import SpeedConfig, measure_speed

    cfg = SpeedConfig(model="shufflenet_v1_g3", model_kwargs={"width": 0.25, "stages_repeats": (1, 1, 1)},
                      image_size=8, batch_size=1, inference_batches=2, repeats=2, warmup=0, show_progress=False,
                      time_training=False)
    r = measure_speed(cfg)
    assert math.isnan(r["fixed_step_ms"]) and math.isnan(r["learned_step_ms"]) and math.isnan(r["train_step_ratio"])
    assert r["fixed_images_per_s"] > 0 and r["hardened_images_per_s"] > 0
    assert r["hardened_params"] == r["fixed_params"] < r["soft_params"]




def test_mirror_training_settles_and_hardens_its_shuffles(tmp_path):
    config = TrainConfig(**TINY_FIELDS, epochs=6, max_train_samples=480, shuffle_init="uniform", shuffle_noise=0.1,
                         shuffle_parameterisation="mirror", harden_after=1, checkpoint=False,
                         output_dir=str(tmp_path))
    result = train(config)
    per_layer = pd.read_csv(tmp_path / "layer_penalties.csv")
    # every shuffle got below the rounding threshold and was frozen to its permutation before the last epoch
    # (the projected parameterisation, same settings, freezes none of them within these 6 epochs)
    assert min(result.hardened_epochs) > 0 and max(result.hardened_epochs) < 6
    assert (per_layer.iloc[-1, 1:] == 0).all() and (per_layer.iloc[0, 1:] > 0).all()
    assert result.test_acc_hard > 0.8


def test_a_mirror_run_resumes_exactly(tmp_path):
    # every mirror step follows its own batch's gradient, so nothing a checkpoint leaves out carries over
    common = dict(TINY_FIELDS, epochs=3, max_train_samples=240, shuffle_init="uniform", shuffle_noise=0.1,
                  shuffle_parameterisation="mirror")
    whole = train(TrainConfig(**common, output_dir=str(tmp_path / "whole")))
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**common, output_dir=str(tmp_path / "cut")), callbacks=[_StopAfter(1)])
    resumed = train(TrainConfig(**common, output_dir=str(tmp_path / "cut")), resume=True)
    assert resumed.test_acc_hard == whole.test_acc_hard and resumed.final_penalty == whole.final_penalty
    _state_dicts_equal(tmp_path / "whole" / "model.pt", tmp_path / "cut" / "model.pt")


def test_a_mirror_model_is_timed_as_it_trains() -> None:
    from aslib.training.speed import train_step

    model = tiny_shufflenet(shuffle_init="uniform", shuffle_noise=0.1, shuffle_parameterisation="mirror")
    before = [layer.weight.detach().clone() for layer in learned_shuffles(model)]
    step = train_step(model, torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                      torch.arange(8) % 10, TrainConfig(lr=0.01))
    step()
    step()
    assert all(not torch.equal(layer.weight.detach(), old) for layer, old in zip(learned_shuffles(model), before))


@pytest.mark.parametrize("parameterisation", ["projected", "mirror"])
def test_a_channels_last_step_computes_what_the_default_one_does(parameterisation):
    from aslib.training.loop import penalised_step

    model = tiny_shufflenet(shuffle_init="uniform", shuffle_noise=0.1, shuffle_parameterisation=parameterisation).double()
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(8) % 10
    losses = []
    for net, batch in ((model, x), (twin, x.contiguous(memory_format=torch.channels_last))):
        optimizer = make_optimizer(net, TrainConfig())
        losses.append(penalised_step(net, batch, y, optimizer, 0.03, mirror_lam=3.0, mirror_step_size=0.3)[0])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-10, atol=1e-12)
    for a, b in zip(model.parameters(), twin.parameters()):  # the same step, up to summation order
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_training_keeps_its_layout_and_learns(tmp_path, channels_last):
    from aslib.training.train import fit

    model = tiny_shufflenet()
    seen = []  # the layout of the training batches' activations after the first BatchNorm (16 x 8 x 8 maps)
    norm = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    norm.register_forward_hook(lambda m, i, out: seen.append(out.is_contiguous(memory_format=torch.channels_last))
                               if m.training else None)
    config = TrainConfig(**TINY_FIELDS, epochs=2, max_train_samples=480, channels_last=channels_last, checkpoint=False,
                         output_dir=str(tmp_path))
    result = fit(model, load_dataset("digits", max_train_samples=480), config)
    assert seen and set(seen) == {channels_last} and result.test_acc_hard > 0.5
