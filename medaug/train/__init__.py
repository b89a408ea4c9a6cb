"""Training: the one loop for every variant, its config, checkpoints and run folders.

Example:
    >>> from medaug.train import TrainConfig, train
    >>> cfg = TrainConfig(steps=200)
    >>> result = train("cache", "runs", model="vaegan", config=cfg)  # doctest: +SKIP
    >>> result.run_dir                                               # doctest: +SKIP
    PosixPath('runs/00000-vaegan-2d')
"""

from medaug.train.checkpoint import load_checkpoint, load_model
from medaug.train.config import TrainConfig
from medaug.train.loop import TrainingStopped, TrainResult, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "load_checkpoint",
    "load_model",
    "train",
]
