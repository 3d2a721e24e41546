"""A per-epoch progress bar for ``model.fit``: batches, running loss, then validation mIoU."""

from __future__ import annotations

from roverlite._tf import keras


class EpochProgress(keras.callbacks.Callback):
    """tqdm bar over one epoch's batches; silent (but still counting) when disabled."""

    def __init__(self, epoch: int, epochs: int, enabled: bool = True):
        super().__init__()
        self.epoch, self.epochs, self.enabled = epoch, epochs, enabled
        self.batches = 0
        self.last_loss: float | None = None
        self._bar = None

    def on_train_begin(self, logs=None):
        if self.enabled:
            # tqdm (optional, [train] extra) only when a bar is shown
            from tqdm.auto import tqdm

            total = self.params.get("steps") if self.params else None
            self._bar = tqdm(total=total, desc=f"epoch {self.epoch + 1}/{self.epochs}", unit="batch", leave=True)

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])
        if self._bar is not None:
            self._bar.update(1)
            if self.last_loss is not None:
                self._bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)

    def images_seen(self, batch_size: int) -> int:
        return self.batches * batch_size

    def close(self, val_miou: float | None) -> None:
        if self._bar is not None:
            loss = "n/a" if self.last_loss is None else f"{self.last_loss:.4f}"
            miou = "n/a" if val_miou is None else f"{val_miou:.4f}"
            self._bar.set_postfix(loss=loss, val_mIoU=miou)
            self._bar.close()
