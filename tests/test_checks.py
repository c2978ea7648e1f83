"""The shared input validators: accepted values come back, rejected ones raise naming the argument."""

import math

import numpy as np
import pytest
import torch

from aslib.core.checks import as_generator, check_fraction, check_nonnegative, check_positive, check_positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_positive_int_accepts(value):
    assert check_positive_int(value, "n") == int(value)
    assert type(check_positive_int(value, "n")) is int


@pytest.mark.parametrize("value", [0, -2, 1.0, True, "3", None])
def test_positive_int_rejects_naming_argument(value):
    with pytest.raises(ValueError, match="restarts must be a positive integer"):
        check_positive_int(value, "restarts")


def test_real_checks():
    assert check_positive(0.5, "lr") == 0.5
    assert check_nonnegative(0, "lam") == 0.0
    assert check_fraction(0.25, "val_fraction") == 0.25
    assert check_fraction(1, "p", closed=True) == 1.0
    for bad, check in [(0, check_positive), (-1e-9, check_nonnegative), (1.0, check_fraction)]:
        with pytest.raises(ValueError, match="x must"):
            check(bad, "x")
    for bad in (math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="x must be"):
            check_positive(bad, "x")


def test_as_generator_is_seeded_and_passes_generators_through():
    a = torch.rand(5, generator=as_generator(3))
    b = torch.rand(5, generator=as_generator(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.rand(5, generator=as_generator(4)))
    gen = torch.Generator().manual_seed(1)
    assert as_generator(gen) is gen
    torch.manual_seed(11)
    c = torch.rand(3, generator=as_generator(None))
    torch.manual_seed(11)
    assert torch.equal(c, torch.rand(3, generator=as_generator(None)))
    for bad in (-1, 1.5, "0"):
        with pytest.raises(ValueError, match="seed must be"):
            as_generator(bad)
