"""No silent chance-level network: where learned shuffles stand before rounding, the warning when they are not
permutations, the collapse to J/n of the projected step that the mirror step avoids, and the hard phase."""

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from aslib.core.penalty import ROUNDING_THRESHOLD, l12_penalty, penalty_at_uniform, permutation_matrix
from aslib.nn.layers import LearnedShuffle
from aslib.nn.shuffles import UNIFORM_FRACTION, RoundingWarning, shuffle_health
from aslib.training.config import TrainConfig
from aslib.training.loop import hard_phase_start
from aslib.training import train as train_module
from aslib.training.train import train

#: The tiniest ShuffleNet v1 on 256 digits, trained three epochs: under a second a run.
TINY_COLLAPSE = dict(model="shufflenet_v1_g3", model_kwargs={"width": 0.25}, stages_repeats=(1, 1, 1), batch_size=32,
                     show_progress=False, recalibration_batches=4, max_train_samples=256, epochs=3,
                     shuffle_init="uniform", shuffle_noise=0.1, checkpoint=False)


def _layer_at(M: torch.Tensor) -> LearnedShuffle:
    layer = LearnedShuffle(M.shape[0], "identity")
    with torch.no_grad():
        layer.weight.copy_(M)
    return layer


def test_shuffle_health_names_unsettled_and_uniform_layers_by_their_penalty():
    n = 8
    perm = permutation_matrix(torch.randperm(n, generator=torch.Generator().manual_seed(0)))
    uniform = torch.full((n, n), 1.0 / n)
    cases = {"settled": 0.98 * perm + 0.02 * uniform, "halfway": 0.5 * perm + 0.5 * uniform,
             "flat": 0.02 * perm + 0.98 * uniform}
    model = nn.Sequential(*(_layer_at(M) for M in cases.values()), LearnedShuffle(n, "identity"))
    model[3].harden()  # a hardened shuffle is a permutation: never reported
    penalties = {name: float(l12_penalty(M)) for name, M in cases.items()}  # the oracle
    assert penalties["settled"] < ROUNDING_THRESHOLD <= penalties["halfway"]
    assert penalties["halfway"] < UNIFORM_FRACTION * penalty_at_uniform(n) <= penalties["flat"]
    health = shuffle_health(model)
    assert [name for name, _ in health.unsettled] == ["1", "2"] and [name for name, _ in health.uniform] == ["2"]
    assert [p for _, p in health.unsettled] == pytest.approx([penalties["halfway"], penalties["flat"]], rel=1e-5)
    message = health.message(total=4)
    assert message.startswith("2 of 4 learned shuffles end above the rounding threshold") and "J/n" in message
    assert shuffle_health(nn.Sequential(_layer_at(cases["settled"]))).healthy


def test_the_projected_step_collapses_to_the_uniform_matrix_and_says_so_where_the_mirror_step_does_not(tmp_path):
    # a large penalty weight and learning rate: momentum accumulates the penalty's common gradient, the clamp
    # empties whole rows, and the projection returns J/n, where no gradient singles out a permutation
    with pytest.warns(RoundingWarning, match="at or near the uniform matrix J/n") as caught:
        collapsed = train(TrainConfig(**TINY_COLLAPSE, lr=0.5, lam=1.0, shuffle_parameterisation="projected",
                                      output_dir=str(tmp_path / "projected")))
    assert collapsed.uniform_shuffles == collapsed.unsettled_shuffles == 3
    assert caught[0].filename == __file__  # the warning names the caller's line, not aslib's
    assert collapsed.unsettled_layers == ["stages.0.0.shuffle", "stages.1.0.shuffle", "stages.2.0.shuffle"]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        mirror = train(TrainConfig(**TINY_COLLAPSE, lr=0.5, lam=1.0, shuffle_parameterisation="mirror",
                                   output_dir=str(tmp_path / "mirror")))
    assert mirror.uniform_shuffles == 0  # multiplicative steps cannot flatten M
    # the counts travel with result.json (and so into every runs table read by collect)
    import json
    saved = json.loads((tmp_path / "projected" / "result.json").read_text())
    assert (saved["unsettled_shuffles"], saved["uniform_shuffles"]) == (3, 3)


def test_the_hard_phase_trains_the_network_that_is_deployed(tmp_path):
    config = TrainConfig(**{**TINY_COLLAPSE, "checkpoint": True}, lam=0.03, shuffle_parameterisation="mirror",
                         hard_phase=1 / 3, output_dir=str(tmp_path / "hard"))
    with pytest.warns(RoundingWarning, match="for the hard phase"):  # two epochs leave them short of a permutation
        result = train(config)
    assert result.unsettled_shuffles > 0
    # every shuffle was rounded after epoch 2 and trained as a gather for the last epoch
    assert result.hardened_epochs == [2, 2, 2]
    assert result.history["penalty"].iloc[-1] == 0 and result.history["penalty"].iloc[-2] > 0
    # so the end rounds nothing: no change, no recalibration, the reported accuracy is the trained network's
    assert result.rounding_change == 0 and result.test_acc_hard_no_recalibration == result.test_acc_soft
    assert all(layer.is_hardened for layer in result.model.modules() if isinstance(layer, LearnedShuffle))
    # resumed from its last checkpoint, the run reports where its shuffles stood when the hard phase rounded them
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        resumed = train(config, resume=True)
    assert (resumed.unsettled_layers, resumed.uniform_shuffles) == (result.unsettled_layers, result.uniform_shuffles)
    assert resumed.test_acc_hard == result.test_acc_hard
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="hard_phase"):
            TrainConfig(hard_phase=bad)


def test_the_hard_phase_begins_inside_an_epoch_at_its_fraction_of_the_steps(tmp_path):
    # 256 images in batches of 32: 8 steps an epoch, 24 in all; a tenth at the end starts at step round(21.6) = 22
    config = TrainConfig(**TINY_COLLAPSE, lam=0.03, hard_phase=0.1, output_dir=str(tmp_path / "tenth"))
    assert hard_phase_start(config, 8) == 22 and hard_phase_start(dataclasses.replace(config, hard_phase=0), 8) == 24
    steps, seen = [], []
    harden, step = LearnedShuffle.harden, train_module.penalised_step

    def record(layer):  # noqa: ANN001, ANN202
        if not layer.is_hardened:  # the end's rounding calls it again on every layer, a no-op by then
            seen.append(len(steps))
        return harden(layer)

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        steps.append(1)
        return step(*args, **kwargs)

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(LearnedShuffle, "harden", record)
            patch.setattr(train_module, "penalised_step", counted)
            result = train(config)
    assert seen == [22, 22, 22] and len(steps) == 24  # each layer once, after 22 soft steps, inside the third epoch
    assert result.hardened_epochs == [2, 2, 2]
    assert result.history["penalty"].iloc[-1] == 0 and result.rounding_change == 0
    assert TrainConfig().hard_phase == 0.1 and TrainConfig().shuffle_parameterisation == "mirror"
