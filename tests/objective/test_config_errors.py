"""Bad component configs raise one ConfigError naming the key and what is allowed."""

import subprocess
import sys

import pytest

from mdm.errors import ConfigError
from mdm.objective import MDMObjective, Method
from mdm.registry import MASKS

CASES = [
    ("mirorr", "method.preset", "unknown method 'mirorr'; allowed: standard"),
    ({"preset": "isad", "rate": {"delta": 1.5}}, "method.rate.delta", "less than 1"),
    ({"preset": "isad", "rate": {"delta": 0}}, "method.rate.delta", "greater than 0"),
    ({"preset": "clipped", "t_sampler": {"lo": 0.8, "hi": 0.3}}, "method.t_sampler", "needs lo < hi"),
    ({"preset": "strats", "t_sampler": {"k": 0}}, "method.t_sampler.k", "greater than or equal to 1"),
    ({"preset": "multisample2", "mask": {"k": 0}}, "method.mask.k", "greater than or equal to 1"),
    ({"preset": "ema", "control_variate": {"bins": 0}}, "method.control_variate.bins", "greater than or equal to 1"),
    ({"preset": "ema", "control_variate": {"eta": 2}}, "method.control_variate.eta", "less than or equal to 1"),
    ({"preset": "mirror", "mask": {"gate": 0.9}}, "method.mask.gate", "unknown key (got 0.9); mirror accepts: no options"),
    ({"preset": "standard", "mask": "mirrror"}, "method.mask.name", "unknown mask builder 'mirrror'; allowed"),
    ({"preset": "standard", "tsampler": "uniform"}, "method.tsampler", "unknown key; allowed: preset"),
    ("clipped+strats+lattice", "method.preset", "choose one"),
    ("mirror+multisample2", "method.preset", "'mirror' and 'multisample' both set the mask"),
    ("exact_count+isad", "method.mask", "needs a uniform per-token rate"),
    ({"preset": "ppots", "t_sampler": {"density": "/no/such.json"}}, "method.t_sampler.density", "no such density file"),
    ({"preset": "ppots", "t_sampler": {"mix": 1.0}}, "method.t_sampler.mix", "less than 1"),
    ({"preset": "ppots", "t_sampler": {"u": "sobol"}}, "method.t_sampler.u", "'uniform', 'strats' or 'lattice'"),
    (42, "method", "expected a preset name or a mapping"),
]


@pytest.mark.parametrize("spec,where,message", CASES)
def test_bad_config_names_key_and_allowed_values(spec, where, message):
    with pytest.raises(ConfigError) as info:
        Method.build(spec)
    assert info.value.where == where, str(info.value)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_error_message_is_one_line_listing_allowed_names():
    with pytest.raises(ConfigError, match="allowed: bernoulli, exact_count, mirror, mirror_released_plus, multisample"):
        MASKS.build("nope", "mask")


def test_unfitted_ppots_density_is_a_clear_error_at_sampling():
    obj = MDMObjective("ppots", mask_token_id=1)
    with pytest.raises(ValueError, match="fit one first"):
        obj.method.t_sampler.sample(4, __import__("torch").Generator())


def test_composition_builds_and_reports_its_parts():
    m = Method.build({"preset": "ppots+mirror+strats", "t_sampler": {"density": "flat"}})
    assert (m.t_sampler.name, m.t_sampler.config.u, m.mask.name) == ("ppots", "strats", "mirror")
    assert m.unbiased and m.targets == "ABC" and m.cost == 2.0
    assert not Method.build("syrm+mirror").unbiased
    m = Method.build({"preset": "strats+clipped", "t_sampler": {"k": 3}})
    assert (m.t_sampler.name, m.t_sampler.config.u, m.t_sampler.config.k) == ("clipped", "strats", 3)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mdm.cli", "methods", "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "unrecognized arguments: --bogus" in out.stderr
