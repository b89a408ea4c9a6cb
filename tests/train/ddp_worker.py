"""Run under torchrun by test_train.py: train the jobs of a JSON plan, one after another.

The process group is started here, once, so that every ``train`` call joins it.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from medaug.train import TrainConfig, train


def keep_first_gradients(path: str):
    """An ``on_step`` hook that saves every parameter's gradient after step 1 (rank 0)."""

    def hook(step: int, model: torch.nn.Module) -> None:
        if step == 1 and dist.get_rank() == 0:
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            torch.save(grads, path)

    return hook


def main(plan_path: str) -> None:
    plan = json.loads(open(plan_path).read())
    dist.init_process_group("gloo")
    for job in plan["jobs"]:
        train(
            job["cache"],
            job["out"],
            model=job["variant"],
            config=TrainConfig.from_dict(job["train"]),
            model_overrides=job.get("model", plan["model"]),
            on_step=keep_first_gradients(job["grads"]),
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
