"""The permuted-input experiment: the pixel permutation, the recovery measures, the model, a tiny run."""

import pytest
import torch

from aslib.training.data import load_dataset
from aslib.examples.permuted_input import (
    PermutedInputConfig,
    PermutedPixels,
    PixelShuffleNet,
    build_model,
    example_images,
    exact_recovery,
    inverse_permutation,
    load_permuted_splits,
    neighbourhood_recovery,
    permute_pixels,
    random_pixel_permutation,
    recovery_measures,
    run_arm,
    small_cnn,
    symmetric_recovery,
)
from aslib.nn.layers import LearnedShuffle
from aslib.core.penalty import permutation_matrix
from aslib.training.train import TrainConfig


def test_permute_pixels_moves_each_pixel_where_the_permutation_says():
    images = torch.randn(3, 2, 4, 5)
    sigma = random_pixel_permutation(4, 5, seed=3)
    out = permute_pixels(images, sigma)
    assert out.shape == images.shape
    for p in range(20):  # out[..., p] = images[..., sigma[p]] on row-major positions
        q = int(sigma[p])
        assert torch.equal(out[:, :, p // 5, p % 5], images[:, :, q // 5, q % 5])


def test_inverse_really_inverts():
    sigma = random_pixel_permutation(8, 8, seed=0)
    inv = inverse_permutation(sigma)
    assert torch.equal(sigma[inv], torch.arange(64)) and torch.equal(inv[sigma], torch.arange(64))
    images = torch.randn(5, 3, 8, 8)
    assert torch.equal(permute_pixels(permute_pixels(images, sigma), inv), images)
    assert torch.equal(permute_pixels(permute_pixels(images, inv), sigma), images)


def test_latent_permutation_is_seeded_and_not_trivial():
    assert torch.equal(random_pixel_permutation(8, 8, 5), random_pixel_permutation(8, 8, 5))
    assert not torch.equal(random_pixel_permutation(8, 8, 5), random_pixel_permutation(8, 8, 6))
    assert (random_pixel_permutation(8, 8, 5) != torch.arange(64)).float().mean() > 0.5


def test_bad_permutations_are_refused():
    with pytest.raises(ValueError, match="permutation"):
        permute_pixels(torch.zeros(1, 1, 2, 2), torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="expected 4"):
        permute_pixels(torch.zeros(1, 1, 2, 2), torch.arange(5))
    with pytest.raises(ValueError, match="grid"):
        neighbourhood_recovery(torch.arange(6), torch.arange(6), 2, 2)


def test_permuted_dataset_wraps_every_split():
    splits, latent = load_permuted_splits(TrainConfig(max_train_samples=16), permutation_seed=7)
    plain = load_dataset("digits", max_train_samples=16)
    assert isinstance(splits.test, PermutedPixels) and len(splits.train) == len(plain.train) == 16
    image, label = splits.test[4]
    raw, raw_label = plain.test[4]
    assert label == raw_label
    assert torch.equal(permute_pixels(image, inverse_permutation(latent)), raw)
    rows = example_images(PermutedInputConfig(permutation_seed=7), inverse_permutation(latent), num_images=3)
    assert torch.equal(torch.from_numpy(rows["unscrambled"]), torch.from_numpy(rows["original"]))
    assert not torch.equal(torch.from_numpy(rows["scrambled"]), torch.from_numpy(rows["original"]))


def _grid_map(ids: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """The learned perm whose composed map ``latent[perm]`` equals ``ids.flatten()``."""
    return inverse_permutation(latent)[ids.flatten()]


def test_recovery_of_the_exact_inverse_is_one():
    latent = random_pixel_permutation(8, 8, seed=1)
    measures = recovery_measures(inverse_permutation(latent), latent, 8, 8)
    assert measures == {"exact_recovery": 1.0, "symmetric_recovery": 1.0, "neighbourhood_recovery": 1.0}
    assert exact_recovery(torch.arange(64), torch.arange(64)) == 1.0


def test_recovery_of_a_shift_or_flip_is_tolerated():
    latent = random_pixel_permutation(8, 8, seed=2)
    ids = torch.arange(64).reshape(8, 8)
    shifted = _grid_map(ids.roll(1, dims=1), latent)  # cyclic shift by one column
    assert exact_recovery(shifted, latent) == 0.0
    # 8 of the 112 neighbour pairs straddle the seam (counted by hand: one per row).
    assert neighbourhood_recovery(shifted, latent, 8, 8) == pytest.approx(104 / 112)
    flipped = _grid_map(ids.flip(0), latent)
    assert exact_recovery(flipped, latent) == 0.0
    assert neighbourhood_recovery(flipped, latent, 8, 8) == 1.0
    assert symmetric_recovery(flipped, latent, 8, 8) == 1.0
    assert symmetric_recovery(_grid_map(ids.T.flip(1), latent), latent, 8, 8) == 1.0  # a rotation


def test_recovery_of_a_random_permutation_is_low():
    latent = random_pixel_permutation(8, 8, seed=3)
    values = [recovery_measures(random_pixel_permutation(8, 8, seed=100 + s), latent, 8, 8) for s in range(20)]
    # Expected values by chance: 1/64 exact, 8/64 at best over 8 symmetries, 112/2016 neighbour pairs.
    assert sum(v["exact_recovery"] for v in values) / 20 < 0.05
    assert sum(v["symmetric_recovery"] for v in values) / 20 < 0.15
    assert sum(v["neighbourhood_recovery"] for v in values) / 20 < 0.15


def test_exact_inverse_in_front_equals_the_oracle_cnn():
    torch.manual_seed(0)
    cnn = small_cnn(2, 10, width=4).eval()
    latent = random_pixel_permutation(6, 6, seed=4)
    shuffle = LearnedShuffle(36, "uniform")
    with torch.no_grad():
        shuffle.weight.copy_(permutation_matrix(inverse_permutation(latent)))
    model = PixelShuffleNet(cnn, shuffle).eval()
    images = torch.randn(5, 2, 6, 6)
    scrambled = permute_pixels(images, latent)
    torch.testing.assert_close(model(scrambled), cnn(images))  # soft: M is the permutation matrix
    assert torch.equal(shuffle.harden(), inverse_permutation(latent))
    assert torch.equal(model.unscramble(scrambled), images)
    torch.testing.assert_close(model(scrambled), cnn(images), rtol=0, atol=0)
    with pytest.raises(ValueError, match="positions"):
        model(torch.randn(1, 2, 5, 5))


def test_arms_share_the_cnn_initialisation():
    splits = load_dataset("digits", max_train_samples=8)
    config = TrainConfig(shuffle_init="uniform", shuffle_noise=0.1)
    oracle, learned = build_model("oracle", config, splits, 4), build_model("l12", config, splits, 4)
    assert oracle.shuffle is None and learned.shuffle is not None and learned.shuffle.channels == 64
    for a, b in zip(oracle.cnn.state_dict().values(), learned.cnn.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="arm"):
        build_model("nope", config, splits, 4)
    with pytest.raises(ValueError, match="pixel"):
        build_model("l12", TrainConfig(shuffle_init="shuffle"), splits, 4)


def test_pretrained_arms_copy_and_freeze_the_given_cnn():
    splits = load_dataset("digits", max_train_samples=8)
    config = TrainConfig(shuffle_init="uniform", shuffle_noise=0.1)
    trained = small_cnn(1, 10, 4)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    model = build_model("l12_pretrained", config, splits, 4, pretrained=trained)
    for a, b in zip(model.cnn.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in model.cnn.parameters())
    assert [p.shape for p in model.parameters() if p.requires_grad] == [torch.Size([64, 64])]
    with pytest.raises(ValueError, match="needs"):
        build_model("relaxed_pretrained", config, splits, 4)
    with pytest.raises(ValueError, match="takes no"):
        build_model("l12", config, splits, 4, pretrained=trained)


def test_tiny_training_run_lowers_the_penalty_and_hardens(tmp_path):
    config = PermutedInputConfig(
        train=TrainConfig(max_train_samples=256, epochs=3, batch_size=32, lam=0.05, shuffle_init="uniform",
                          shuffle_noise=0.1, device="cpu", show_progress=False, recalibration_batches=2,
                          shuffle_lr_scale=10.0, output_dir=str(tmp_path)),
        width=4)
    result = run_arm("l12", config)
    penalties = result.history["penalty"]
    start = LearnedShuffle(64, "uniform", noise=0.1).penalty().item()  # close to the maximum 2*64*(1-1/8)
    assert penalties.iloc[-1] < 0.8 * start and penalties.iloc[-1] < penalties.iloc[0]
    assert result.model.shuffle.is_hardened and sorted(result.permutation) == list(range(64))
    assert set(result.recovery) == {"exact_recovery", "symmetric_recovery", "neighbourhood_recovery"}
    assert result.matrix.shape == (64, 64)
    # the reported numbers against independent recomputations: the rounded model's accuracy on the scrambled
    # test set, counted image by image, and the exact recovery read off sigma and pi directly
    splits, sigma = load_permuted_splits(config.train, config.permutation_seed)
    model = result.model.eval()
    with torch.no_grad():
        correct = sum(int(model(x.unsqueeze(0)).argmax(1).item() == int(y)) for x, y in splits.test)
    assert result.test_acc_hard == pytest.approx(correct / len(splits.test), abs=1e-9)
    pi = torch.tensor(result.permutation)
    assert result.recovery["exact_recovery"] == pytest.approx(float((sigma[pi] == torch.arange(64)).float().mean()))


def test_unscrambling_verdicts_pair_by_seed_test_chance_and_correct_together():
    import pandas as pd
    from scipy import stats

    from aslib.examples.permuted_input import unscrambling_verdicts

    n, rows = 64, []
    values = {"oracle": (0.9, 0.0), "scrambled": (0.6, 0.0), "l12": (0.5, 5), "relaxed": (0.4, 1)}
    for seed in range(3):
        for arm, (acc, recovered) in values.items():
            rows.append({"arm": arm, "seed": seed, "test_acc": acc + 0.01 * seed * (arm == "oracle"),
                         "test_acc_hard": acc - 0.01 * (seed + 1) * (arm == "relaxed"),
                         "exact_recovery": (recovered + seed * (arm == "l12")) / n})
    verdicts = {v.question: v for v in unscrambling_verdicts(pd.DataFrame(rows), list(values), n)}
    chance = verdicts["l12 recovers more positions than chance"]
    total = 5 + 6 + 7
    assert chance.p == pytest.approx(2 * stats.poisson.sf(total - 1, 3), rel=1e-9) and chance.answer == "yes"
    assert verdicts["relaxed recovers more positions than chance"].answer == "not shown"
    # the same seeds under both arms: paired by seed
    ordered = verdicts["the CNN is more accurate on ordered than on scrambled images"]
    assert "3 seeds paired" in ordered.evidence
    assert ordered.p == pytest.approx(stats.ttest_rel([0.9, 0.91, 0.92], [0.6] * 3).pvalue, rel=1e-9)
    tests = [v for v in verdicts.values() if v.is_test]
    assert len(tests) == 5 and all(v.p_holm is not None for v in tests)  # the pretrained arms did not run: n/a
    assert verdicts["with the frozen CNN, rounding costs the penalised arm less accuracy than the relaxed arm"].answer \
        == "n/a"
