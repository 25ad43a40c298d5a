"""Imported by the jobs' fork server (``process_run.PRELOAD``), once: what a fit would otherwise load
in every child it forks. torch's optimizers import ``torch._dynamo`` on their first step (about 800
modules, sympy among them: 2 s on a laptop core), so one tiny step is taken here. Its tensors are too
small for torch to start its thread pool (a fork of a process with running OpenMP threads can hang).
"""

from __future__ import annotations

import torch


def warm() -> None:
    model = torch.nn.Linear(2, 2)
    for opt in (torch.optim.AdamW(model.parameters()), torch.optim.SGD(model.parameters())):
        loss = torch.nn.functional.kl_div(
            torch.log_softmax(model(torch.ones(1, 2)), -1), torch.full((1, 2), 0.5), reduction="batchmean"
        )
        loss.backward()
        opt.step()
        opt.zero_grad()


warm()
