"""Small Lightning callbacks of the framework."""

import copy

from lightning.pytorch.callbacks import Callback


class RestoreBestWeights(Callback):
    """Keep the weights of the best validation epoch in memory and restore them when the fit
    ends, so that the model evaluated and saved is the best-validation one."""

    def __init__(self, monitor: str = "val/loss"):
        self.monitor = monitor
        self.best_score, self.best_epoch, self.best_state = float("inf"), -1, None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics[self.monitor])
        if score < self.best_score:
            self.best_score, self.best_epoch = score, trainer.current_epoch
            self.best_state = copy.deepcopy(pl_module.state_dict())

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state)
