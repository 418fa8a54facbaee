"""Training hooks with YOLOv5's names, so that a user logs or steers anything without forking train.py.

    from utils.training.callbacks import Callbacks
    cb = Callbacks()
    cb.register_action("on_fit_epoch_end", "print", lambda vals, epoch, best_fitness, fi: print(epoch, fi))
    train.run(data="coco128.yaml", callbacks=cb)

What train.py passes to each hook:
    on_pretrain_routine_start()
    on_pretrain_routine_end(labels, names)                    labels: list of (n, 5) arrays, names: class names
    on_train_start()
    on_train_epoch_start(epoch)
    on_train_batch_start()
    on_train_batch_end(model, ni, imgs, targets, paths, vals) vals: running mean [box, obj, cls] loss
    on_before_zero_grad()
    on_train_epoch_end(epoch=epoch)
    on_fit_epoch_end(vals, epoch, best_fitness, fi)           vals: the results.csv row (losses, metrics, lrs)
    on_model_save(last, epoch, final_epoch, best_fitness, fi)
    on_train_end(last, best, epoch, results)
    teardown()
The val hooks of YOLOv5 (on_val_start, ...) are accepted names that train.py does not call.
"""

from __future__ import annotations

from collections.abc import Callable

from utils.errors import UserError

__all__ = ["HOOKS", "Callbacks"]

HOOKS = (
    "on_pretrain_routine_start", "on_pretrain_routine_end",
    "on_train_start", "on_train_epoch_start", "on_train_batch_start", "optimizer_step", "on_before_zero_grad",
    "on_train_batch_end", "on_train_epoch_end",
    "on_val_start", "on_val_batch_start", "on_val_image_end", "on_val_batch_end", "on_val_end",
    "on_fit_epoch_end", "on_model_save", "on_train_end", "on_params_update", "teardown",
)


class Callbacks:
    """Named actions per hook, run in the order they were registered."""

    def __init__(self):
        self._callbacks: dict[str, list[dict]] = {k: [] for k in HOOKS}
        self.stop_training = False  # an action may set it to end training after the current epoch

    def register_action(self, hook: str, name: str = "", callback: Callable | None = None) -> None:
        if hook not in self._callbacks:
            raise UserError(f"unknown callback hook {hook!r}; hooks: {', '.join(HOOKS)}")
        if not callable(callback):
            raise UserError(f"callback {name or '?'!r} for {hook!r} is not callable: {callback!r}")
        self._callbacks[hook].append({"name": name, "callback": callback})

    def get_registered_actions(self, hook: str | None = None) -> dict | list:
        """The actions of `hook`, or of every hook."""
        return self._callbacks[hook] if hook else self._callbacks

    def run(self, hook: str, *args, **kwargs) -> None:
        if hook not in self._callbacks:
            raise UserError(f"unknown callback hook {hook!r}; hooks: {', '.join(HOOKS)}")
        for action in self._callbacks[hook]:
            action["callback"](*args, **kwargs)
