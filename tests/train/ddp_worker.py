"""Run under torchrun by test_train.py: train the jobs of a JSON plan, one after another.

The process group is started here, once, so that every ``train`` call joins it.
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from medaug.train import TrainConfig, train


def main(plan_path: str) -> None:
    plan = json.loads(open(plan_path).read())
    dist.init_process_group("gloo")
    for job in plan["jobs"]:
        train(
            job["cache"],
            job["out"],
            model=job["variant"],
            config=TrainConfig.from_dict(job["train"]),
            model_overrides=plan["model"],
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
