"""What a resume restores besides the trials themselves: asha's rungs (replayed from Ray's stored
results) and a trial's trainable weights (loaded exactly, or not at all)."""
import pickle
import sys

import pytest
import ray
import torch
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from transformers import get_linear_schedule_with_warmup

from qrlora import apply_method
from sweeps.schedulers import ResumableASHAScheduler
from trainables.config import TrialConfig
from trainables.models import load_model
from trainables.train import Split, parameter_groups, train


def scripted(config):
    """A trial that reports the scores it is given, one per iteration."""
    for score in config["scores"]:
        tune.report({"score": score})


# Ray's workers cannot import this test module: send the trainable by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def asha() -> ResumableASHAScheduler:
    """The scheduler `scheduler: asha` builds (epochs 2, grace period 1, reduction factor 2), as a restored
    Tuner holds it: unpickled from when the sweep started, its rungs empty."""
    fresh = ResumableASHAScheduler(time_attr="training_iteration", max_t=2, grace_period=1, reduction_factor=2)
    return pickle.loads(pickle.dumps(fresh))


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False)
    yield
    if started:
        ray.shutdown()


def test_asha_rebuilds_its_rungs_from_stored_results_on_resume(tmp_path, local_ray):
    """Two trials reach rung 1 (scores 0.9, then 0.8: the second is stopped there) in a real Tune run; a
    scheduler restored the way a resume restores it, given those trials from Ray's experiment folder,
    holds the same rungs, and stops a later trial that a scheduler with empty rungs would let go on."""
    tune.Tuner(scripted, param_space={"scores": tune.grid_search([[0.9, 0.9], [0.8, 0.8]])},
               tune_config=tune.TuneConfig(metric="score", mode="max", scheduler=asha(), max_concurrent_trials=1),
               run_config=tune.RunConfig(name="asha", storage_path=str(tmp_path), verbose=0)).fit()
    stored = sorted(tune.ExperimentAnalysis(str(tmp_path / "asha")).trials, key=lambda trial: -trial.config["scores"][0])
    first, second = (trial.trial_id for trial in stored)
    assert [trial.last_result["training_iteration"] for trial in stored] == [2, 1]  # the second stopped at rung 1

    restored = asha()
    restored.set_search_properties("score", "max")
    for trial in stored:
        restored.on_trial_add(None, trial)
    assert {milestone: recorded for milestone, recorded in restored._brackets[0]._rungs} == \
        {2: {first: 0.9}, 1: {first: 0.9, second: 0.8}}
    later = Trial("scripted", config={"scores": [0.7, 0.7]}, stub=True)
    restored.on_trial_add(None, later)
    assert restored.on_trial_result(None, later, {"training_iteration": 1, "score": 0.7}) == TrialScheduler.STOP


def test_a_resume_state_with_other_parameter_names_is_an_error_naming_them(tiny_model_dir, tmp_path):
    """A checkpoint whose trainable parameters do not match the model's by name fails the resume, naming
    the missing and the unexpected ones, instead of loading nothing and training on from scratch."""
    config = TrialConfig(model=tiny_model_dir, method="lora", layers="all", epochs=2, caches="none",
                         cache_dir=str(tmp_path))
    model, _ = apply_method(load_model(tiny_model_dir, 2, 0), config.method_config())
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-3, 1e-3))
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, 10)
    params = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
    renamed = next(name for name in params if "lora_A" in name)
    params[renamed.replace("lora_A", "lora_a")] = params.pop(renamed)
    state = {"epoch": 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "params": params,
             "train_time_s": 0.0, "wall_time_s": 0.0}
    with pytest.raises(ValueError) as raised:
        list(train(model, Split(list(range(8))), None, config, torch.device("cpu"), 1e-3, 1e-3, 1, False, "resume",
                   state))
    assert str(raised.value) == ("the checkpoint's trainable parameters do not match the model's: missing "
                                 f"[{renamed!r}], unexpected [{renamed.replace('lora_A', 'lora_a')!r}]")
