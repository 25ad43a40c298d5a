"""Config validation: each bad value names the field, the value and what is valid."""

import re

import pytest

from workbench.engine.config import DistillConfig


@pytest.mark.parametrize(
    "field,value,valid",
    [
        ("temperature", 0, r"in \(0, 1000\]"),
        ("temperature", -2.0, r"in \(0, 1000\]"),
        ("w_kd", -0.1, ">= 0"),
        ("w_ce", -1, ">= 0"),
        ("w_mse", float("nan"), "finite"),
        ("alpha", 1.2, r"\[0, 1\]"),
        ("alpha", -0.1, r"\[0, 1\]"),
        ("epochs", 0, ">= 1"),
        ("epochs", 2.5, ">= 1"),
        ("batch_size", -8, ">= 1"),
        ("lr", 0.0, r"in \(0, "),
        ("lr", -1e-3, r"in \(0, 3.4e\+38\]"),
        ("lr", 1e300, r"in \(0, 3.4e\+38\]"),
        ("log_every", 0, ">= 1"),
        ("optimizer", "adamax", "adam, adamw, sgd"),
        ("scheduler", "step", "constant, cosine"),
        ("seed", -1, ">= 0"),
    ],
)
def test_bad_values_name_field_value_and_range(field, value, valid):
    with pytest.raises(ValueError) as e:
        DistillConfig(**{field: value})
    msg = str(e.value)
    assert msg.startswith(f"{field}: {value!r}")
    assert re.search(valid, msg), msg


def test_all_zero_weights():
    with pytest.raises(ValueError, match=r"w_ce, w_kd, w_mse, w_hint: all are 0"):
        DistillConfig(w_ce=0, w_kd=0)


def test_alpha_sets_weights_and_conflicts_are_refused():
    c = DistillConfig(alpha=0.9)
    assert (c.w_ce, c.w_kd) == (0.9, pytest.approx(0.1))
    with pytest.raises(ValueError, match=r"w_ce: 0.5 conflicts with alpha=0.9"):
        DistillConfig(alpha=0.9, w_ce=0.5)
    # weights given later drop the preset; alpha given later re-derives the weights
    assert c.replace(w_kd=2.0).alpha is None
    assert c.replace(alpha=0.3).w_ce == 0.3


def test_round_trip_and_unknown_fields():
    c = DistillConfig(epochs=3, temperature=8, alpha=0.5, optimizer="sgd")
    assert DistillConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['temp'\]"):
        DistillConfig.from_dict({"temp": 4})


def test_text_transfer_fields_default_off_validate_and_round_trip():
    c = DistillConfig()
    assert (c.generated_blocks, c.generate_temperature, c.on_policy) == (0, 1.0, 0.0)
    d = DistillConfig(generated_blocks=500, generate_temperature=0.8, on_policy=1)
    assert d.on_policy == 1.0 and isinstance(d.on_policy, float)
    assert DistillConfig.from_dict(d.to_dict()) == d
    for field, value, valid in (
        ("generated_blocks", -3, r"an integer in \[0, 20,000\]"),
        ("generated_blocks", 10**6, r"an integer in \[0, 20,000\]"),
        ("generate_temperature", -1.0, r"a number in \[0.01, 100\]"),
        ("generate_temperature", 1e-300, r"a number in \[0.01, 100\]"),
        ("sample_tokens", 10**7, r"an integer in \[0, 2000\]"),
        ("temperature", 5000.0, r"a number in \(0, 1000\]"),
        ("on_policy", 2, r"a share in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=rf"^{field}: {value!r} is invalid; expected {valid}"):
            DistillConfig(**{field: value})
