"""The trial's optimiser: AdamW on torch's fused CPU kernel takes the reference AdamW's steps."""
import copy

import torch

from trainables.train import adamw


def test_the_trials_adamw_is_fused_on_cpu_and_takes_the_reference_steps():
    """Two groups at their own rates, weight decay, ten steps: the same parameters as torch's single-tensor
    AdamW (the textbook loop) to float tolerance."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    reference, initial = copy.deepcopy(model), copy.deepcopy(model)
    groups = lambda net: [{"params": list(net[0].parameters()), "lr": 3e-2},
                          {"params": list(net[2].parameters()), "lr": 1e-3}]
    ours = adamw(groups(model), 3e-2, 0.1, torch.device("cpu"))
    theirs = torch.optim.AdamW(groups(reference), lr=3e-2, weight_decay=0.1, foreach=False)
    assert ours.defaults["fused"] and not theirs.defaults["fused"]
    inputs, labels = torch.randn(8, 16), torch.randint(0, 3, (8,))
    for _ in range(10):
        for net, optimizer in ((model, ours), (reference, theirs)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs), labels).backward()
            optimizer.step()
    for (name, param), expected, before in zip(model.named_parameters(), reference.parameters(), initial.parameters()):
        assert not torch.allclose(param, before, atol=1e-4), name  # the steps moved it
        torch.testing.assert_close(param, expected, rtol=1e-5, atol=1e-6, msg=name)
